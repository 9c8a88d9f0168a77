"""verify_dir and the CLI commands: problems name file, entry index and what is wrong."""

import os
import shutil
from pathlib import Path

import pytest

from zdtmpy.cli import main
from zdtmpy.compress import Compression, compress_dir, verify_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.images import (
    PE_LAZY,
    PE_PAYLOAD_ALIGNED,
    PE_PRESENT,
    Pagemap,
    messages,
    read_image,
    write_image,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1"
PS = 4096


def copy(src, dst):
    shutil.copytree(src, dst)
    for p in Path(dst).iterdir():
        p.chmod(0o644)
    return Path(dst)


def rewrite_entry(path, index, fn):
    raw = read_image(path)
    msg = messages.PagemapEntry.FromString(raw.entries[index + 1])
    fn(msg)
    raw.entries[index + 1] = msg.SerializeToString()
    write_image(path, raw.magic, raw.entries)


def test_fixtures_are_valid():
    assert verify_dir(DATA / "plain") == []
    assert verify_dir(DATA / "compressed") == []


@pytest.mark.parametrize("index,fn,what", [
    (1, lambda m: m.compressed_size.__setitem__(0, 5000), ("block 0: compressed_size 5000 is "
                                                         "larger than the block")),
    (1, lambda m: setattr(m, "total_compressed_size", 1), "!= sum"),
    (1, lambda m: m.compressed_size.append(3), "3 compressed_size values for 2 blocks"),
    (1, lambda m: setattr(m, "region_pages", 1025), "over 4 MiB"),
    (3, lambda m: setattr(m, "flags", PE_LAZY | PE_PAYLOAD_ALIGNED),
     "PE_PAYLOAD_ALIGNED on an entry without PE_PRESENT"),
    (1, lambda m: setattr(m, "flags", PE_LAZY), "compression metadata on an entry without"),
    (1, lambda m: setattr(m, "vaddr", m.vaddr + 1), "not page aligned"),
    (2, lambda m: setattr(m, "vaddr", 0x555ba8c40000), "sorted"),
])
def test_metadata_problems(tmp_path, index, fn, what):
    d = copy(DATA / "compressed", tmp_path / "d")
    rewrite_entry(d / "pagemap-25829.img", index, fn)
    problems = verify_dir(d)
    assert problems, what
    hit = [p for p in problems if what in p.what]
    assert hit and hit[0].file == "pagemap-25829.img" and hit[0].entry == index, problems


def test_truncated_pages_file(tmp_path):
    d = copy(DATA / "compressed", tmp_path / "d")
    os.truncate(d / "pages-1.img", 1000)
    (p,) = verify_dir(d)
    assert p.file == "pagemap-25828.img" and p.entry is None and "holds 1000" in p.what


def test_garbage_lz4_named_by_entry_and_block(tmp_path):
    d = copy(DATA / "compressed", tmp_path / "d")
    pm = Pagemap.load(d / "pagemap-25828.img")
    e = pm.entries[6]
    blob = bytearray((d / "pages-1.img").read_bytes())
    at = e.offset + e.block_offsets[2]
    blob[at:at + e.sizes[2]] = bytes(range(256)) * (e.sizes[2] // 256) + \
        bytes(e.sizes[2] % 256)
    (d / "pages-1.img").write_bytes(bytes(blob))
    (p,) = verify_dir(d)
    assert (p.file, p.entry) == ("pagemap-25828.img", 6) and p.what.startswith("block 2: LZ4")


def test_nonzero_padding(tmp_path):
    d = copy(DATA / "compressed", tmp_path / "d")
    e = Pagemap.load(d / "pagemap-25828.img").entries[2]
    assert e.flags & PE_PAYLOAD_ALIGNED
    with open(d / "pages-1.img", "r+b") as f:
        f.seek(e.offset - 1)
        f.write(b"\1")
    (p,) = verify_dir(d)
    assert p.entry == 2 and "padding" in p.what


@pytest.mark.parametrize("fields,what", [
    ({"img_version": 2}, "compressed layout in an img_version 2 layer"),
    ({"compress": 0}, "compress 0"),
    ({"compress": 2, "compress_region_size": 8192}, "region_pages 0 does not match"),
    ({"compress_region_size": 8192}, "compress_region_size set with compress = 1"),
])
def test_inventory_consistency(tmp_path, fields, what):
    d = copy(DATA / "compressed", tmp_path / "d")
    inv = messages.InventoryEntry.FromString(read_image(d / "inventory.img").entries[0])
    for k, v in fields.items():
        setattr(inv, k, v)
    write_image(d / "inventory.img", 0x58313116, [inv])
    assert any(what in str(p) for p in verify_dir(d)), verify_dir(d)


def test_cli_verify_exit_codes(tmp_path, capsys):
    assert main(["verify", str(DATA / "compressed")]) == 0
    d = copy(DATA / "compressed", tmp_path / "d")
    rewrite_entry(d / "pagemap-25829.img", 4, lambda m: m.compressed_size.__setitem__(3, 4097))
    assert main(["verify", str(d)]) == 1
    err = capsys.readouterr().err
    assert "pagemap-25829.img: entry 4: block 3: compressed_size 4097" in err


def test_cli_compress_show_decompress(tmp_path, capsys):
    d = copy(DATA / "plain", tmp_path / "d")
    assert main(["compress", str(d), "--region", "64K", "--acceleration", "2"]) == 0
    assert main(["show", str(d)]) == 0
    out = capsys.readouterr().out
    assert "compress region" in out and "pagemap-25828.img" in out
    assert main(["compress", str(d)]) == 0
    assert "already compressed" in capsys.readouterr().out
    assert main(["decompress", str(d), "--in-place"]) == 0
    assert (d / "pages-1.img").read_bytes() == (DATA / "plain" / "pages-1.img").read_bytes()


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["compress", str(tmp_path), "--region", "3K"]) == 1
    assert "region size 3072" in capsys.readouterr().err
    assert main(["decompress", str(tmp_path)]) == 1
    assert "not an image set" in capsys.readouterr().err


def test_synthetic_region_layer_verifies(tmp_path):
    data = bytes(PS) * 3 + os.urandom(PS) + b"x" * PS
    make_layer(tmp_path, {1: [(0x10000, 5, PE_PRESENT, data)]},
               spec=Compression("region", 2 * PS))
    assert verify_dir(tmp_path) == []
    compress_dir(tmp_path, Compression("page"))     # already compressed: no-op
    assert verify_dir(tmp_path) == []


@pytest.mark.parametrize("name", ["plain", "compressed"])
def test_image_bytes_are_pagemap_stats_totals(name):
    from zdtmpy.compress.stats import image_bytes, pagemap_stats
    from zdtmpy.images import ImageSet

    path = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1" / name
    stats = [pagemap_stats(pm) for pm in ImageSet(path).pagemaps.values()]
    assert stats and any(s.before for s in stats)
    assert image_bytes(path) == (sum(s.before for s in stats), sum(s.after for s in stats),
                                 name == "compressed")
