"""compress_dir / decompress_dir: conformance with upstream crit, refusals, versions, install."""

import os
import shutil
from pathlib import Path

import lz4
import pytest

from zdtmpy.compress import Compression, compress_dir, decompress_dir, recover, verify_dir
from zdtmpy.compress.install import STAGE, install, new_stage
from zdtmpy.compress.source import entry_chunks
from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError
from zdtmpy.images import (
    INVENTORY_MAGIC,
    PE_PARENT,
    PE_PRESENT,
    ImageSet,
    Pagemap,
    PageReader,
    messages,
    read_image,
    write_image,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1"
PS = 4096
P = PE_PRESENT
PAGE = Compression("page")


def copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    for p in Path(dst).iterdir():
        if not p.is_symlink():
            p.chmod(0o644)
    return Path(dst)


def snapshot(d):
    """Every entry of a directory tree: bytes of files, targets of symlinks."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root, name)
            rel = str(p.relative_to(d))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "dir"
    return out


def parsed(path, cls_head=None):
    raw = read_image(path)
    if raw.magic == INVENTORY_MAGIC:
        return [messages.InventoryEntry.FromString(raw.entries[0])]
    return ([messages.PagemapHead.FromString(raw.entries[0])] +
            [messages.PagemapEntry.FromString(e) for e in raw.entries[1:]])


def all_pages(path):
    r = PageReader(path)
    out = {}
    for key, pm in r.layers[0].pagemaps.items():
        for e in pm.entries:
            if e.flags & (P | PE_PARENT):
                out[(key, e.vaddr)] = r.read(key, e.vaddr, e.nr_pages)
    r.close()
    return out


def text(n, tag=b"t"):
    return b"".join((b"%s page %d: compressible words here\n" % (tag, i) * 200)[:PS]
                    for i in range(n))


# -- conformance with upstream crit ------------------------------------------------------

def test_decompress_fixture_gives_plain(tmp_path):
    d = copy(DATA / "compressed", tmp_path / "d")
    res = decompress_dir(d, in_place=True)
    assert res.changed
    for name in ("pages-1.img", "pages-2.img"):
        assert (d / name).read_bytes() == (DATA / "plain" / name).read_bytes()
    for name in ("inventory.img", "pagemap-25828.img", "pagemap-25829.img"):
        assert parsed(d / name) == parsed(DATA / "plain" / name)
    assert not list(d.glob("*.bak"))
    assert snapshot(d) == snapshot(DATA / "plain")        # in fact byte for byte


def test_compress_fixture_gives_upstream_result(tmp_path):
    d = copy(DATA / "plain", tmp_path / "d")
    compress_dir(d, Compression("page", acceleration=1), in_place=True)
    for name in ("inventory.img", "pagemap-25828.img", "pagemap-25829.img"):
        assert parsed(d / name) == parsed(DATA / "compressed" / name)
    same_lz4 = lz4.library_version_string() == "1.9.4"
    for name in ("pages-1.img", "pages-2.img"):
        if same_lz4:
            assert (d / name).read_bytes() == (DATA / "compressed" / name).read_bytes()
    assert all_pages(d) == all_pages(DATA / "plain")
    assert verify_dir(d) == []


def test_compress_keeps_backups_and_never_overwrites_bak(tmp_path):
    d = copy(DATA / "plain", tmp_path / "d")
    (d / "pages-2.img.bak").write_bytes(b"older backup")
    compress_dir(d, PAGE)
    assert (d / "pages-1.img.bak").read_bytes() == (DATA / "plain" / "pages-1.img").read_bytes()
    assert (d / "pages-2.img.bak").read_bytes() == b"older backup"
    assert (d / "inventory.img.bak").read_bytes() == \
        (DATA / "plain" / "inventory.img").read_bytes()
    assert not (d / STAGE).exists()


def test_already_compressed_and_already_decompressed_are_noops(tmp_path):
    d = copy(DATA / "compressed", tmp_path / "c")
    before = snapshot(d)
    res = compress_dir(d, Compression("region"))
    assert not res.changed and "already compressed" in res.message
    assert snapshot(d) == before
    p = copy(DATA / "plain", tmp_path / "p")
    before = snapshot(p)
    res = decompress_dir(p)
    assert not res.changed and "already decompressed" in res.message
    assert snapshot(p) == before


def test_region_roundtrip(tmp_path):
    d = copy(DATA / "plain", tmp_path / "d")
    compress_dir(d, Compression("region", 64 * 1024, acceleration=3), in_place=True)
    iset = ImageSet(d)
    assert (iset.img_version, iset.compress, iset.compress_region_size) == (3, 2, 65536)
    assert all(e.msg.region_pages == 16 for pm in iset.pagemaps.values()
               for e in pm.entries if e.compressed)
    assert verify_dir(d) == []
    assert all_pages(d) == all_pages(DATA / "plain")
    decompress_dir(d, in_place=True)
    assert snapshot(d) == snapshot(DATA / "plain")


# -- refusals: files stay byte-identical ------------------------------------------------

def set_inventory(d, **fields):
    inv = messages.InventoryEntry.FromString(read_image(d / "inventory.img").entries[0])
    for k, v in fields.items():
        setattr(inv, k, v)
    write_image(d / "inventory.img", INVENTORY_MAGIC, [inv])


def refused(d, action, match):
    before = snapshot(d)
    with pytest.raises(ImageError, match=match):
        action(d)
    assert snapshot(d) == before


def compress(d):
    return compress_dir(d, PAGE)


def decompress(d):
    return decompress_dir(d)


@pytest.mark.parametrize("src,fields,match", [
    ("compressed", {"compress": 7}, "unknown compression layout 7"),
    ("plain", {"img_version": 1}, "img_version 1"),
    ("plain", {"img_version": 4}, "img_version 4"),
    ("compressed", {"img_version": 1}, "img_version 1"),
    ("plain", {"compress": 1}, "img_version 2"),
    ("compressed", {"img_version": 2}, "img_version 2"),
])
@pytest.mark.parametrize("action", [compress, decompress])
def test_inventory_refusals(tmp_path, src, fields, match, action):
    d = copy(DATA / src, tmp_path / "d")
    set_inventory(d, **fields)
    refused(d, action, match)


@pytest.mark.parametrize("name", ["inventory.img", "pagemap-25828.img", "pages-2.img"])
@pytest.mark.parametrize("src,action", [("plain", compress), ("compressed", decompress)])
def test_symlinked_image_files_are_refused(tmp_path, name, src, action):
    d = copy(DATA / src, tmp_path / "d")
    (tmp_path / name).write_bytes((d / name).read_bytes())
    (d / name).unlink()
    (d / name).symlink_to(tmp_path / name)
    refused(d, action, "symlink")


@pytest.mark.parametrize("src,action", [("plain", compress), ("compressed", decompress)])
def test_payload_size_mismatch_is_refused(tmp_path, src, action):
    d = copy(DATA / src, tmp_path / "d")
    with open(d / "pages-1.img", "ab") as f:
        f.write(b"\0")
    refused(d, action, "holds")
    os.truncate(d / "pages-1.img", os.path.getsize(d / "pages-1.img") - 2)
    refused(d, action, "holds")


def test_short_read_is_an_error(tmp_path):
    d = copy(DATA / "compressed", tmp_path / "d")
    pm = Pagemap.load(d / "pagemap-25828.img")   # sizes checked while the file was whole
    os.truncate(d / pm.pages_name, 1000)
    fd = os.open(d / pm.pages_name, os.O_RDONLY)
    try:
        with pytest.raises(ImageError, match="short read"):
            for e in pm.entries:
                for _ in entry_chunks(fd, pm, e):
                    pass
    finally:
        os.close(fd)


def test_unknown_mode_spec_refused_before_anything(tmp_path):
    d = copy(DATA / "plain", tmp_path / "d")
    refused(d, lambda d: compress_dir(d, Compression("off")), "decompress")


def rewrite_entry(path, index, fn):
    raw = read_image(path)
    msg = messages.PagemapEntry.FromString(raw.entries[index + 1])
    fn(msg)
    raw.entries[index + 1] = msg.SerializeToString()
    write_image(path, raw.magic, raw.entries)


@pytest.mark.parametrize("fn,match", [
    (lambda m: m.compressed_size.__setitem__(1, 4097), "larger than the block"),
    (lambda m: setattr(m, "total_compressed_size", m.total_compressed_size + 1), "sum"),
    (lambda m: setattr(m, "region_pages", 2048), "over 4 MiB"),
    (lambda m: setattr(m, "flags", PE_PARENT), "without PE_PRESENT"),
])
def test_corrupt_metadata_refused_by_decompress(tmp_path, fn, match):
    d = copy(DATA / "compressed", tmp_path / "d")
    rewrite_entry(d / "pagemap-25828.img", 1, fn)
    refused(d, decompress, match)


def test_garbage_lz4_fails_decompress_and_leaves_files(tmp_path):
    d = copy(DATA / "compressed", tmp_path / "d")
    pm = Pagemap.load(d / "pagemap-25829.img")
    e = pm.entries[4]
    blob = bytearray((d / pm.pages_name).read_bytes())
    at = e.offset + e.block_offsets[7]
    blob[at:at + e.sizes[7]] = b"\xf0" * e.sizes[7]
    (d / pm.pages_name).write_bytes(bytes(blob))
    refused(d, decompress, r"pagemap-25829.img: entry 4 block 7: LZ4")
    assert not (d / STAGE).exists()


# -- unknown fields and versions along chains -------------------------------------------

def test_unknown_fields_survive_compress_and_decompress(tmp_path):
    d = copy(DATA / "plain", tmp_path / "d")
    extra = b"\xa0\x01\x2a"                 # field 20, varint 42: unknown to every schema
    raw = read_image(d / "pagemap-25828.img")
    raw.entries = [e + extra for e in raw.entries]
    write_image(d / "pagemap-25828.img", raw.magic, raw.entries)
    inv = read_image(d / "inventory.img")
    write_image(d / "inventory.img", inv.magic, [inv.entries[0] + extra])
    compress_dir(d, PAGE, in_place=True)
    decompress_dir(d, in_place=True)
    for e in read_image(d / "pagemap-25828.img").entries + read_image(d / "inventory.img").entries:
        assert e.endswith(extra) or extra in e


def chain_of_three(root):
    make_layer(root / "1", {1: [(0x100000, 4, P, text(4, b"a"))]})
    make_layer(root / "2", {1: [(0x100000, 2, PE_PARENT, None), (0x102000, 2, P, text(2, b"b"))]},
               parent="../1")
    make_layer(root / "3", {1: [(0x100000, 3, PE_PARENT, None), (0x103000, 1, P, text(1, b"c"))]},
               parent="../2")
    return [root / n for n in ("1", "2", "3")]


def test_versions_along_a_chain(tmp_path):
    l1, l2, l3 = chain_of_three(tmp_path)
    want = all_pages(l3)
    for layer in (l1, l2, l3):
        compress_dir(layer, PAGE)
        assert ImageSet(layer).img_version == 3
    assert all_pages(l3) == want
    assert verify_dir(l3, chain=True) == []
    decompress_dir(l3)                       # has a parent: stays version 3
    assert (ImageSet(l3).img_version, ImageSet(l3).compress) == (3, 0)
    assert not ImageSet(l3).inventory.HasField("compress")
    assert verify_dir(l3, chain=True) == []
    res = decompress_dir(l3, chain=True)     # whole chain: back to version 2
    assert res.changed and len(res.layers) == 3
    assert [ImageSet(x).img_version for x in (l1, l2, l3)] == [2, 2, 2]
    assert all_pages(l3) == want
    assert verify_dir(l3, chain=True) == []
    assert not decompress_dir(l3, chain=True).changed


def test_v2_child_of_v3_parent_is_a_problem(tmp_path):
    l1, l2, _l3 = chain_of_three(tmp_path)
    compress_dir(l1, PAGE)
    problems = verify_dir(l2)
    assert len(problems) == 1 and "must be version 3" in str(problems[0])


# -- staged install: interruption ---------------------------------------------------------

def test_interrupted_install_rolls_forward(tmp_path):
    ref = copy(DATA / "plain", tmp_path / "ref")
    compress_dir(ref, PAGE, in_place=True)
    d = copy(DATA / "plain", tmp_path / "d")
    stage = new_stage(d)
    names = ["pages-1.img", "pagemap-25828.img", "pages-2.img", "pagemap-25829.img",
             "inventory.img"]
    for n in names:
        shutil.copy(ref / n, stage / n)
    install(d, names, backup=True, crash_after=2)          # "crash" half way
    assert ImageSet(d).journal_pending
    with pytest.raises(ImageError, match="interrupted"):
        PageReader(d).read(25828, 0x555ba8c40000, 1)
    assert any("interrupted" in str(p) for p in verify_dir(d))
    assert recover(d)
    assert not ImageSet(d).journal_pending and not (d / STAGE).exists()
    for n in names:
        assert (d / n).read_bytes() == (ref / n).read_bytes()
        assert (d / (n + ".bak")).read_bytes() == (DATA / "plain" / n).read_bytes()
    assert verify_dir(d) == []


def test_uncommitted_stage_leaves_original_usable(tmp_path):
    d = copy(DATA / "plain", tmp_path / "d")
    stage = new_stage(d)
    (stage / "pages-1.img").write_bytes(b"half written")    # crash before the journal
    assert verify_dir(d) == []
    assert all_pages(d) == all_pages(DATA / "plain")
    compress_dir(d, PAGE, in_place=True)                     # discards the stale stage
    assert not (d / STAGE).exists()
    assert all_pages(d) == all_pages(DATA / "plain")


@pytest.mark.parametrize("spec", [PAGE, Compression("region", 16 * 4096)], ids=["page", "region"])
def test_pipelined_across_entries_writes_what_add_writes(tmp_path, spec):
    """compress_dir reads and encodes entry after entry without waiting for each to be
    written (begin_source): many small present entries between parent entries give the
    very files the writer's one-entry-at-a-time add() gives for the same pages."""
    import random

    rng = random.Random(4)
    ps = 4096
    entries, vaddr = [], 0x100000
    for i in range(300):
        n = rng.randrange(1, 40)
        kind = i % 4
        if kind == 0:
            entries.append((vaddr, n, PE_PARENT, None))
        else:
            data = (text(n, b"e%d" % i) if kind == 1 else bytes(n * ps) if kind == 2
                    else rng.randbytes(n * ps))
            entries.append((vaddr, n, P, data))
        vaddr += (n + rng.randrange(0, 3)) * ps
    make_layer(tmp_path / "1", {1: [(0x100000, (vaddr - 0x100000) // ps, P,
                                     text((vaddr - 0x100000) // ps, b"p"))]})
    make_layer(tmp_path / "2", {1: entries}, parent="../1")
    make_layer(tmp_path / "want", {1: entries}, parent="../1", spec=spec)
    compress_dir(tmp_path / "2", spec, in_place=True)
    for name in ("pagemap-1.img", "pages-1.img"):
        assert (tmp_path / "2" / name).read_bytes() == (tmp_path / "want" / name).read_bytes()
    # and decompress, all entries of a pagemap at once (copy_sources), gives them back
    make_layer(tmp_path / "plain", {1: entries}, parent="../1")
    decompress_dir(tmp_path / "2", in_place=True)
    want = b"".join(d for _, _, f, d in entries if f == P)
    assert (tmp_path / "2" / "pages-1.img").read_bytes() == want
    assert (tmp_path / "2" / "pagemap-1.img").read_bytes() == \
        (tmp_path / "plain" / "pagemap-1.img").read_bytes()
