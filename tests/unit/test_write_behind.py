"""pagesout.WriteBehind: the pages writer's background flushes, with real files and pipes."""

import os
import random

import pytest

from zdtmpy.codec import Compression
from zdtmpy.compress import compress_dir, decompress_dir, pagesout
from zdtmpy.compress.synth import make_layer
from zdtmpy.images.pagemap import PE_PRESENT

MIB = 1 << 20


def test_flushes_run_in_the_background_one_at_a_time(tmp_path, monkeypatch):
    """Writing 5 MiB with a flush every MiB: flushes start on the way (at most one at a
    time, so not necessarily one per MiB), finish() waits for the last, and the file holds
    every byte."""
    monkeypatch.setattr(pagesout, "FLUSH_BEHIND", MIB)
    data = random.Random(3).randbytes(5 * MIB)
    fd = os.open(tmp_path / "out", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        wb = pagesout.WriteBehind(fd)
        for off in range(0, len(data), MIB // 4):
            os.pwrite(fd, data[off:off + MIB // 4], off)
            wb.wrote(off + MIB // 4)
        assert MIB <= wb.flushed <= len(data)
        wb.finish()
        wb.finish()   # nothing pending: a no-op
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == data


def test_without_flush_nothing_is_flushed(tmp_path, monkeypatch):
    monkeypatch.setattr(pagesout, "FLUSH_BEHIND", MIB)
    fd = os.open(tmp_path / "out", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        wb = pagesout.WriteBehind(fd, flush=False)
        os.pwrite(fd, bytes(3 * MIB), 0)
        wb.wrote(3 * MIB)
        assert wb.flushed == 0
    finally:
        os.close(fd)


def test_a_failed_background_flush_is_raised_once_then_cancel_ignores(monkeypatch):
    """A pipe cannot be fdatasync'ed (EINVAL): the error of the background flush comes out
    of finish() (a later fsync would not report a writeback error again); cancel() waits
    and says nothing."""
    monkeypatch.setattr(pagesout, "FLUSH_BEHIND", MIB)
    r, w = os.pipe()
    try:
        wb = pagesout.WriteBehind(w)
        wb.wrote(MIB)
        with pytest.raises(OSError) as exc:
            wb.finish()
        assert exc.value.errno == 22   # EINVAL
        wb.finish()   # reported once
        wb.wrote(2 * MIB)
        wb.cancel()
        wb.cancel()
    finally:
        os.close(r)
        os.close(w)


def test_compress_and_decompress_with_flushes_on_the_way(tmp_path, monkeypatch):
    """A layer of several MiB through compress_dir and decompress_dir with a background
    flush every MiB: the pages come back the same."""
    monkeypatch.setattr(pagesout, "FLUSH_BEHIND", MIB)
    rng = random.Random(5)
    words = b"".join(b"line %d of a text page\n" % i for i in range(200000))
    data = words[:3 * MIB] + rng.randbytes(2 * MIB) + bytes(MIB) + words[-2 * MIB:]
    make_layer(tmp_path, {1: [(0x7f0000000000, len(data) // 4096, PE_PRESENT, data)]})
    pages = tmp_path / "pages-1.img"
    for layout in ("region", "page"):
        r = compress_dir(tmp_path, Compression(layout), in_place=True, progress=False)
        assert r.changed and r.bytes_after < len(data)
        decompress_dir(tmp_path, in_place=True, progress=False)
        assert pages.read_bytes() == data
