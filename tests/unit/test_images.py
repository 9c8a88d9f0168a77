"""Framing, run-time proto messages, pagemap normalisation (4.1 / 4.2), image sets, chains."""

import os
import struct
from pathlib import Path

import pytest

from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError
from zdtmpy.images import (
    COMMON_MAGIC,
    INVENTORY_MAGIC,
    PAGEMAP_MAGIC,
    PE_LAZY,
    PE_PARENT,
    PE_PRESENT,
    SERVICE_MAGIC,
    STATS_MAGIC,
    ImageSet,
    Pagemap,
    load_chain,
    messages,
    read_image,
    write_image,
)
from zdtmpy.images.framing import parse_image
from zdtmpy.images.protoparse import load_messages, parse_proto

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1"
PS = 4096


# -- framing --------------------------------------------------------------------------

def test_fixture_magics():
    assert read_image(DATA / "plain" / "inventory.img").magic == INVENTORY_MAGIC
    assert (DATA / "plain" / "inventory.img").read_bytes()[:4] == struct.pack("<I",
                                                                               INVENTORY_MAGIC)
    stats = (DATA / "plain" / "stats-dump").read_bytes()
    assert struct.unpack_from("<II", stats) == (SERVICE_MAGIC, STATS_MAGIC)
    assert read_image(DATA / "plain" / "stats-dump").magic == STATS_MAGIC
    pm = (DATA / "plain" / "pagemap-25828.img").read_bytes()
    assert struct.unpack_from("<II", pm) == (COMMON_MAGIC, PAGEMAP_MAGIC)


def test_write_image_roundtrip_bytes(tmp_path):
    for name in ("inventory.img", "pstree.img", "pagemap-25828.img", "stats-dump", "mm-25828.img"):
        raw = read_image(DATA / "plain" / name)
        write_image(tmp_path / name, raw.magic, raw.entries)
        assert (tmp_path / name).read_bytes() == (DATA / "plain" / name).read_bytes()


@pytest.mark.parametrize("data,what", [
    (b"\x01\x02", "too short"),
    (struct.pack("<I", 0x12345678), "unknown image magic"),
    (struct.pack("<III", COMMON_MAGIC, PAGEMAP_MAGIC, 10) + b"abc", "10 bytes announced"),
    (struct.pack("<II", COMMON_MAGIC, PAGEMAP_MAGIC) + b"\x01\x00", "truncated length"),
])
def test_bad_framing(data, what):
    with pytest.raises(ImageError, match=what):
        parse_image(data, "x.img")


def test_wrong_magic_is_named(tmp_path):
    with pytest.raises(ImageError, match="not the expected pagemap"):
        Pagemap.load(DATA / "plain" / "pstree.img")


# -- proto parser -----------------------------------------------------------------------

def test_parser_builds_descriptors():
    fdp = parse_proto('syntax = "proto2"; package p; /* c */ message m { '
                      'required uint64 a = 1; repeated uint32 b = 6 [packed = true]; // x\n}',
                      "t.proto")
    f = fdp.message_type[0].field
    assert [x.name for x in f] == ["a", "b"] and f[1].options.packed


@pytest.mark.parametrize("text", ['syntax = "proto3";', "message m { required foo = 1; }",
                                  "service s { }", "enum e { A = x; }",
                                  "message m { optional uint32 a = x; }"])
def test_parser_rejects_unsupported(text):
    with pytest.raises(ValueError):
        load_messages({"bad.proto": text})


def test_unknown_fields_survive_parse_and_serialize():
    raw = read_image(DATA / "plain" / "inventory.img").entries[0]
    inv = messages.InventoryEntry.FromString(raw)
    assert inv.img_version == 2
    assert inv.SerializeToString() == raw           # root_ids, lsm, uuid... all kept
    mm = messages.MmEntry.FromString(read_image(DATA / "plain" / "mm-25828.img").entries[0])
    assert len(mm.vmas) > 5 and all(v.end > v.start for v in mm.vmas)


def test_packed_compressed_size_on_the_wire():
    e = messages.PagemapEntry(vaddr=0, compat_nr_pages=2, compressed_size=[1, 2])
    assert b"\x32\x02\x01\x02" in e.SerializeToString()       # field 6, wire type 2


# -- pagemap entries ----------------------------------------------------------------------

def test_v41_and_v42_page_counts(tmp_path):
    old = messages.PagemapEntryV41(vaddr=0x1000, nr_pages=3, flags=PE_PRESENT)
    new = messages.PagemapEntry(vaddr=0x10000, compat_nr_pages=0xFFFFFFFF, nr_pages=5,
                                flags=PE_PRESENT)
    write_image(tmp_path / "pagemap-1.img", PAGEMAP_MAGIC,
                [messages.PagemapHead(pages_id=1), old, new])
    (tmp_path / "pages-1.img").write_bytes(bytes(8 * PS))
    pm = Pagemap.load(tmp_path / "pagemap-1.img")
    assert [e.nr_pages for e in pm.entries] == [3, 5]        # field 5 wins over field 2
    assert pm.payload_size == 8 * PS and pm.payload_problem() is None


def test_legacy_normalisation(tmp_path):
    entries = [messages.PagemapEntry(vaddr=0x1000, compat_nr_pages=1),              # no flags
               messages.PagemapEntry(vaddr=0x2000, compat_nr_pages=1, in_parent=True),
               messages.PagemapEntry(vaddr=0x3000, compat_nr_pages=1, flags=PE_LAZY)]
    write_image(tmp_path / "pagemap-7.img", PAGEMAP_MAGIC,
                [messages.PagemapHead(pages_id=3)] + entries)
    pm = Pagemap.load(tmp_path / "pagemap-7.img")
    assert [e.flags for e in pm.entries] == [PE_PRESENT, PE_PARENT, PE_LAZY]
    assert pm.payload_size == PS and pm.pages_name == "pages-3.img"


def test_fixture_pagemaps_layout():
    for pid in (25828, 25829):
        pm = Pagemap.load(DATA / "compressed" / f"pagemap-{pid}.img")
        assert pm.problems() == [] and pm.payload_problem() is None
        plain = Pagemap.load(DATA / "plain" / f"pagemap-{pid}.img")
        assert plain.payload_size == os.path.getsize(DATA / "plain" / plain.pages_name)


# -- image sets and chains -----------------------------------------------------------------

def test_imageset_fixture():
    iset = ImageSet(DATA / "compressed")
    assert (iset.img_version, iset.compress, iset.compress_region_size) == (3, 1, None)
    assert iset.pids() == [25828, 25829]
    assert set(iset.pagemaps) == {25828, 25829}
    assert iset.parent_link is None and iset.parent() is None


def test_shmem_pagemap_key(tmp_path):
    make_layer(tmp_path, {1: [(0x1000, 1, PE_PRESENT, b"a" * PS)],
                          ("shmem", 9): [(0, 2, PE_PRESENT, b"b" * 2 * PS)]})
    assert set(ImageSet(tmp_path).pagemaps) == {1, ("shmem", 9)}


def layer(path, parent=None, pids=(1,)):
    return make_layer(path, {pids[0]: [(0x1000, 1, PE_PRESENT, bytes(PS))]}, parent=parent,
                      pids=list(pids))


def test_chain_ok(tmp_path):
    layer(tmp_path / "1")
    layer(tmp_path / "2", "../1")
    layer(tmp_path / "3", "../2")
    assert [p.path.name for p in load_chain(tmp_path / "3")] == ["3", "2", "1"]


def test_chain_missing_parent(tmp_path):
    layer(tmp_path / "2", "../1")
    with pytest.raises(ImageError, match="missing directory"):
        load_chain(tmp_path / "2")


def test_chain_parent_not_an_image_set(tmp_path):
    (tmp_path / "1").mkdir()
    layer(tmp_path / "2", "../1")
    with pytest.raises(ImageError, match="not an image set"):
        load_chain(tmp_path / "2")


def test_chain_cycle(tmp_path):
    layer(tmp_path / "1", "../2")
    layer(tmp_path / "2", "../1")
    with pytest.raises(ImageError, match="cycle"):
        load_chain(tmp_path / "2")


def test_chain_other_process_tree(tmp_path):
    layer(tmp_path / "1", pids=(5,))
    layer(tmp_path / "2", "../1", pids=(6,))
    with pytest.raises(ImageError, match="another process tree"):
        load_chain(tmp_path / "2")


def test_not_an_image_set(tmp_path):
    with pytest.raises(ImageError, match="no inventory.img"):
        ImageSet(tmp_path)
