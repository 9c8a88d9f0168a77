"""serve's writer into criu's pipe, and the streamer process's exit, with real pipes and a
real `python -m zdtmpy` process."""

import os
import subprocess
import sys
import threading

from zdtmpy.transport import servefeed
from zdtmpy.transport.streamformat import StreamWriter


def drain(fd, into):
    while chunk := os.read(fd, 1 << 20):
        into.append(chunk)
    os.close(fd)


def test_write_all_hands_the_pipe_parts_no_larger_than_a_step(monkeypatch):
    """Every byte arrives in order, and no writev carries more than WRITE_STEP plus one
    piece (criu copies one part out while the next goes in)."""
    step = servefeed.WRITE_STEP
    big = os.urandom(3 * step + 123)
    pieces = [b"head", memoryview(big), memoryview(servefeed.ZERO)[:step + 7], bytearray(b"x"),
              b"", memoryview(bytearray(os.urandom(step // 3)))]
    expect = b"".join(bytes(p) for p in pieces)
    calls = []
    real = os.writev

    def writev(fd, bufs):
        calls.append(sum(len(b) for b in bufs))
        return real(fd, bufs)

    monkeypatch.setattr(servefeed.os, "writev", writev)
    r, w = os.pipe()
    os.set_blocking(w, False)
    got = []
    t = threading.Thread(target=drain, args=(r, got))
    t.start()
    try:
        assert servefeed.write_all(w, pieces, 10, "pages-1.img") == len(expect)
    finally:
        os.close(w)
        t.join(10)
    assert b"".join(got) == expect
    assert calls and max(calls) <= 2 * step
    assert len([c for c in calls if c]) >= len(expect) // (2 * step)


def test_the_stream_command_exits_with_all_its_output(tmp_path):
    """`zdtmpy stream` ends without the interpreter's teardown: what it printed and wrote
    must still all be there."""
    stream = tmp_path / "s.zstream"
    with open(stream, "wb") as f:
        w = StreamWriter(f)
        fid = w.open("pstree.img")
        w.write(fid, b"p" * 5000)
        w.close(fid)
        w.end()
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a pipe is
    r = subprocess.run([sys.executable, "-m", "zdtmpy", "stream", "extract", "--stream-file",
                        "-", "--images-dir", str(out)], stdin=open(stream, "rb"),
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{out}: 1 files extracted (plain)"
    assert (out / "pstree.img").read_bytes() == b"p" * 5000


def test_only_a_small_file_into_an_empty_pipe_is_fed_without_a_thread(tmp_path):
    from zdtmpy.transport.serve import SMALL_FILE, fits_at_once
    from zdtmpy.transport.streamindex import FileIndex

    small, big = FileIndex("core-1.img", 1837, [16]), FileIndex("pages-1.img", 1 << 20, [16])
    two = FileIndex("mm-1.img", 100, [16, 200])
    r, w = os.pipe()
    try:
        assert fits_at_once(w, small)
        assert not fits_at_once(w, big) and not fits_at_once(w, two)
        assert not fits_at_once(w, FileIndex("x.img", SMALL_FILE + 1, [16]))
        os.write(w, b"x")   # criu's pipe is not empty: the feeder thread waits for it
        assert not fits_at_once(w, small)
    finally:
        os.close(r)
        os.close(w)
    with open(tmp_path / "f", "wb") as f:   # not a pipe: the feeder thread refuses it
        assert not fits_at_once(f.fileno(), small)


def test_a_blocks_record_is_fed_as_one_decoded_piece(tmp_path):
    """Zero, raw and LZ4 blocks of a record come back as one buffer holding all of it (a
    pipe copies every byte anyway; one piece is no Python work per run of pages)."""
    import random

    from zdtmpy.codec.coding import LZ4_CODEC
    from zdtmpy.transport.streamindex import index_stream

    ps = 4096
    rnd = random.Random(5)
    pages = [b"text %d " % i * 600 for i in range(3)] + [bytes(ps), rnd.randbytes(ps),
                                                         rnd.randbytes(ps // 2) + bytes(ps // 2)]
    data = b"".join(p[:ps] for p in pages) * 40 + b"tail" * 300
    sizes, payload = LZ4_CODEC.encode_chunk(data, ps)
    assert 0 in sizes and ps in sizes and any(0 < s < ps for s in sizes)
    path = tmp_path / "s"
    with open(path, "wb") as f:
        w = StreamWriter(f)
        fid = w.open("pages-1.img")
        w.blocks(fid, ps, len(data), sizes, payload)
        w.close(fid)
        w.end()
    fi = index_stream(path).files["pages-1.img"]
    fd = os.open(path, os.O_RDONLY)
    try:
        (rec,) = list(servefeed.records(fd, fi.chunks, "s: pages-1.img"))
        assert len(rec.pieces) == 1 and bytes(rec.pieces[0]) == data
    finally:
        os.close(fd)
