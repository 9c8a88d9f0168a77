"""Kept pages: a pages file that compressing or decompressing would rewrite byte for byte
stays in place (only the pagemap and inventory change), and everything else comes out as
the ordinary rewrite writes it."""

import errno
import os
import random
from pathlib import Path

import pytest

from zdtmpy.codec import Compression
from zdtmpy.compress import compress_dir, decompress_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.compress.writer import PagemapWriter
from zdtmpy.images import PE_PRESENT, ImageSet, PageReader
from zdtmpy.images.pagemap import PE_PAYLOAD_ALIGNED

PS = 4096
A = 0x7f0000000000


def rand(n, seed=1):
    return random.Random(seed).randbytes(n * PS)


def text(n):
    return b"".join((b"page %d: words that compress well\n" % i * 200)[:PS] for i in range(n))


def files(d):
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}


def build(root, entries):
    return make_layer(root, {1: entries})


def both_ways(tmp_path, monkeypatch, entries, convert):
    """(files, pages inode kept?) with kept pages, and the files of the ordinary rewrite."""
    kept = build(tmp_path / "kept", entries)
    ino = os.stat(kept / "pages-1.img").st_ino
    convert(kept)
    got = files(kept), os.stat(kept / "pages-1.img").st_ino == ino
    with monkeypatch.context() as m:
        m.setattr(PagemapWriter, "keep_identical", lambda self, fd: None)
        ordinary = build(tmp_path / "ordinary", entries)
        convert(ordinary)
    return got, files(ordinary)


def check_reads(d, entries):
    with PageReader(d) as r:
        for vaddr, n, _, data in entries:
            if data is not None:
                assert r.read(1, vaddr, n) == data


@pytest.mark.parametrize("spec", [Compression("page"), Compression("region", 16 * PS)],
                         ids=["page", "region64k"])
def test_incompressible_layer_keeps_its_pages_file(tmp_path, monkeypatch, spec):
    entries = [(A, 300, PE_PRESENT, rand(300)), (A + 400 * PS, 5, PE_PRESENT, rand(5, 2)),
               (A + 500 * PS, 3, 0, None)]
    (got, same_inode), want = both_ways(tmp_path, monkeypatch, entries,
                                        lambda d: compress_dir(d, spec))
    assert same_inode and got == {k: v for k, v in want.items() if k != "pages-1.img.bak"}
    d = tmp_path / "kept"
    assert not (d / "pages-1.img.bak").exists() and (d / "pagemap-1.img.bak").exists()
    es = [e for e in ImageSet(d).pagemaps[1].entries if e.present]
    assert all(e.flags & PE_PAYLOAD_ALIGNED and not e.compressed for e in es)
    check_reads(d, entries)
    # and back: the aligned plain entries decompress without a rewrite of the pages either
    ino = os.stat(d / "pages-1.img").st_ino
    res = decompress_dir(d, in_place=True)
    assert res.changed and os.stat(d / "pages-1.img").st_ino == ino
    assert not any(e.flags & PE_PAYLOAD_ALIGNED for e in ImageSet(d).pagemaps[1].entries)
    check_reads(d, entries)
    with open(d / "pages-1.img", "rb") as f:
        assert f.read() == rand(300) + rand(5, 2)


@pytest.mark.parametrize("tail", ["text", "zero", "no-copy-range"])
def test_a_compressible_block_late_gives_the_ordinary_files(tmp_path, monkeypatch, tail):
    """Held back while every block was raw, then copied in when one is not (a chunk of
    text, or a zero page: a hole), in the middle of an entry and after a whole one; also
    where copy_file_range is refused (copied by hand then)."""
    if tail == "no-copy-range":
        def refuse(*args):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        monkeypatch.setattr(os, "copy_file_range", refuse)
    last = bytes(3 * PS) if tail == "zero" else text(3)
    entries = [(A, 600, PE_PRESENT, rand(600)), (A + 700 * PS, 300, PE_PRESENT,
                                                 rand(297, 3) + last)]
    (got, same_inode), want = both_ways(tmp_path, monkeypatch, entries,
                                        lambda d: compress_dir(d, Compression("page")))
    assert not same_inode and got == want
    check_reads(tmp_path / "kept", entries)


def test_decompress_with_padding_or_lz4_rewrites_the_pages(tmp_path, monkeypatch):
    """An LZ4 entry before an aligned raw one: padding, so the pages file is rewritten."""
    entries = [(A, 3, PE_PRESENT, text(2) + bytes(100) + rand(1)[:PS - 100]),
               (A + 10 * PS, 20, PE_PRESENT, rand(20, 4))]
    d = make_layer(tmp_path / "c", {1: entries}, spec=Compression("page"))
    ino = os.stat(d / "pages-1.img").st_ino
    decompress_dir(d)
    assert os.stat(d / "pages-1.img").st_ino != ino
    with open(d / "pages-1.img", "rb") as f:
        assert f.read() == entries[0][3] + entries[1][3]
