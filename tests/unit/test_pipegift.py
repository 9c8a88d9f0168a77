"""serve's hand-over by reference (pipegift: vmsplice from fresh memory): real pipes, real
streams, every byte compared; pages handed over never change; mappings go away."""

import os
import random
import threading

import pytest

from zdtmpy.codec.coding import LZ4_CODEC
from zdtmpy.transport import pipegift, servefeed
from zdtmpy.transport.serve import Serve
from zdtmpy.transport.streamformat import StreamWriter

needs_gift = pytest.mark.skipif(not pipegift.usable(),
                                reason="no vmsplice or transparent huge pages here")
PS = 4096


def drain(fd, into):
    while chunk := os.read(fd, 1 << 20):
        into.append(chunk)
    os.close(fd)


def mixed(n_pages, seed):
    rnd = random.Random(seed)
    kinds = [lambda i: (b"text %d " % i * 600)[:PS], lambda i: rnd.randbytes(PS),
             lambda i: bytes(PS), lambda i: rnd.randbytes(PS // 2) + bytes(PS // 2)]
    return b"".join(kinds[i % 4](i) for i in range(n_pages))


def mapped(addr):
    with open("/proc/self/maps") as f:
        return any(int(line.split("-")[0], 16) <= addr < int(line.split("-")[1].split()[0], 16)
                   for line in f)


def write_stream(path, files, block):
    """files: name -> (data, as BLOCKS records or not); records of one chunk (1 MiB)."""
    with open(path, "wb") as f:
        w = StreamWriter(f)
        for name, (data, blocks) in files.items():
            fid = w.open(name)
            for off in range(0, len(data), 1 << 20):
                part = data[off:off + (1 << 20)]
                if blocks:
                    sizes, payload = LZ4_CODEC.encode_chunk(part, block)
                    w.blocks(fid, block, len(part), sizes, payload)
                else:
                    w.write(fid, part)
            w.close(fid)
        w.end()


@needs_gift
@pytest.mark.parametrize("block", [PS, 64 << 10], ids=["page", "region64k"])
def test_a_big_file_is_handed_over_and_arrives_bit_for_bit(tmp_path, monkeypatch, block):
    data = mixed(5 * 256 + 3, 1)   # 5 MiB and 3 pages: records over several mappings
    raw = os.urandom(3 << 20) + b"end"
    path = tmp_path / "s"
    write_stream(path, {"mem-1.img": (data, True), "big-1.img": (raw, False)}, block)
    srv = Serve(tmp_path, path)
    srv.prepare()
    writes = []
    monkeypatch.setattr(servefeed.os, "writev", lambda fd, b: writes.append(fd) or 0)
    for name, want in (("mem-1.img", data), ("big-1.img", raw)):
        r, w = os.pipe()
        got = []
        t = threading.Thread(target=drain, args=(r, got))
        t.start()
        srv._feed(name, w)   # closes w
        t.join(30)
        assert not srv.errors
        assert b"".join(got) == want
    assert writes == []   # every byte went by reference


@needs_gift
def test_a_page_handed_over_never_changes_and_mappings_go():
    arena = pipegift.Arena()
    r, w = os.pipe()
    os.set_blocking(w, False)
    first = arena.take(3 * PS)
    first.view[:] = b"A" * (3 * PS)
    assert pipegift.splice_all(w, first.addr, 3 * PS, 1 << 18, 5, "x") == 3 * PS
    addr = first.addr
    arena.release(first)
    assert mapped(addr)   # its mapping still hands out spans
    later = [arena.take(1 << 20) for _ in range(5)]   # fills it: a new mapping follows
    for s in later:
        s.view[:] = b"B" * len(s.view)   # never the pages handed over
    old = [s for s in later if s.addr < addr + pipegift.CHUNK and s.addr > addr]
    assert old and len(old) < len(later)
    for s in old[:-1]:
        arena.release(s)
    assert mapped(addr)   # one span of it still in use
    arena.release(old[-1])
    assert not mapped(addr)   # full and every span of it released: unmapped
    assert os.read(r, 4 * PS) == b"A" * (3 * PS)   # the pipe kept the pages as they were
    kept = later[-1].addr
    arena.close()
    assert not mapped(kept)
    os.close(r)
    os.close(w)


@needs_gift
def test_criu_gone_is_a_broken_pipe_and_a_full_pipe_times_out():
    arena = pipegift.Arena()
    span = arena.take(2 << 20)
    r, w = os.pipe()
    os.set_blocking(w, False)
    with pytest.raises(Exception, match="read nothing for 0s"):
        pipegift.splice_all(w, span.addr, 2 << 20, 1 << 18, 0.2, "pages-1.img")
    os.close(r)
    with pytest.raises(BrokenPipeError):
        pipegift.splice_all(w, span.addr, 4096, 4096, 5, "pages-1.img")
    os.close(w)
    arena.close()


def test_writev_is_kept_where_forced(monkeypatch, tmp_path):
    pipegift.usable.cache_clear()
    monkeypatch.setenv("ZDTMPY_SERVE_WRITEV", "1")
    try:
        assert not pipegift.usable()
        data = mixed(300, 2)
        path = tmp_path / "s"
        write_stream(path, {"mem-1.img": (data, True)}, PS)
        srv = Serve(tmp_path, path)
        srv.prepare()
        r, w = os.pipe()
        got = []
        t = threading.Thread(target=drain, args=(r, got))
        t.start()
        srv._feed("mem-1.img", w)
        t.join(30)
        assert not srv.errors and b"".join(got) == data
    finally:
        pipegift.usable.cache_clear()

