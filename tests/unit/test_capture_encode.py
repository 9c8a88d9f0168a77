"""capture's chunk encoder: criu's pipe read into reused chunk buffers, each chunk coded in
one call; the records are the very bytes the per-block coder writes."""

import io
import os
import random
import threading
import time

import pytest

from zdtmpy.codec.coding import LZ4_CODEC

PS = 4096


def mixed(n_pages, seed):
    rnd = random.Random(seed)
    kinds = [lambda i: (b"text %d " % i * 600)[:PS], lambda i: rnd.randbytes(PS),
             lambda i: bytes(PS), lambda i: rnd.randbytes(PS // 2) + bytes(PS // 2)]
    return b"".join(kinds[i % 4](i) for i in range(n_pages))


@pytest.mark.parametrize("block", [PS, 64 << 10])
def test_capture_encodes_a_chunk_as_the_per_block_reference_does(block):
    """capture's one-call chunk encoder writes the very record the per-block coder would."""
    from zdtmpy.transport.captureblocks import _encode_record
    from zdtmpy.transport.streamformat import blocks_record

    data = mixed(256, 3)[:(1 << 20) - 5 * PS] + bytes(5 * PS)
    sizes, payload = LZ4_CODEC.encode_chunk(data, block)
    want = blocks_record(7, 1 << 20, block, len(data), sizes, payload)
    buf = bytearray(data) + b"\xee" * 100   # bytes past n are not the chunk's
    out = bytearray(b"\xdd" * len(buf))    # a payload buffer used before
    got = _encode_record(7, 1 << 20, buf, len(data), block, 1, out)
    assert [bytes(p) for p in got] == [bytes(p) for p in want]


@pytest.mark.parametrize("block", [PS, 64 << 10])
@pytest.mark.parametrize("n", [0, PS - 1, 3 * PS + 17, 1 << 20])
def test_packed_payload_is_the_joined_parts(block, n):
    """The packed encoder (raw blocks copied next to the LZ4 ones, one buffer) gives the
    sizes and the bytes of encode_parts joined, for short last blocks and all-zero chunks;
    where it is not built, capture's record is the same through the joined parts."""
    from zdtmpy.codec import lz4native

    data = mixed(257, 5)[:n]
    want_sizes, want = LZ4_CODEC.encode_chunk(data, block)
    for src in (bytearray(data), bytearray(n)):
        out = bytearray(b"\xdd" * max(n, 1))
        got = LZ4_CODEC.encode_packed(src, n, out, block, 1)
        if got is None:
            assert lz4native.helper() is None or lz4native.helper().batch_packed is None
            pytest.skip(f"lz4batch.c is not in use here ({lz4native.batch_problem()})")
        sizes, m = got
        if src == data:
            assert (sizes.tolist(), bytes(out[:m])) == (want_sizes, want)
        else:
            assert (sizes.tolist(), m) == ([0] * -(-n // block), 0)


def test_capture_record_without_the_packed_encoder(monkeypatch):
    """A codec without the packed path (no compiler): the same record from joined parts."""
    from zdtmpy.codec.blocks import BlockCodec
    from zdtmpy.transport.captureblocks import _encode_record
    from zdtmpy.transport.streamformat import blocks_record

    data = mixed(64, 9)
    want = blocks_record(3, 0, PS, len(data), *LZ4_CODEC.encode_chunk(data, PS))
    monkeypatch.setattr(BlockCodec, "encode_packed", lambda *a, **k: None)
    got = _encode_record(3, 0, bytearray(data), len(data), PS, 1, bytearray(len(data)))
    assert [bytes(p) for p in got] == [bytes(p) for p in want]


def _encoder(tmp_path, layout="page"):
    """A BlockEncoder on a real Capture whose writer writes to a BytesIO (no criu)."""
    import io

    from zdtmpy.codec import Compression
    from zdtmpy.transport import streamformat as sf
    from zdtmpy.transport.capture import Capture
    from zdtmpy.transport.captureblocks import BlockEncoder

    out = io.BytesIO()
    cap = Capture(tmp_path, out, Compression(layout))
    cap.writer = sf.StreamWriter(out, cap.spec)
    return cap, out, BlockEncoder(cap, cap.writer.open("pages-1.img"))


def test_pool_threads_write_records_in_file_order_whatever_order_chunks_end(tmp_path):
    """Chunks encoded last-first: none is written before its predecessors; the one that
    completes the run writes them all, in order, and every buffer comes back."""
    from zdtmpy.transport import streamindex as si

    cap, out, enc = _encoder(tmp_path)
    data = mixed(4 * 256, 11)
    chunks = [data[i:i + enc.chunk] for i in range(0, len(data), enc.chunk)]
    assert len(chunks) == 4
    for seq in (3, 2, 1):
        enc._encode(seq, seq * enc.chunk, bytearray(chunks[seq]), enc.chunk,
                    bytearray(enc.chunk))
        assert enc.next == 0 and not enc.writing and len(enc.free) == 0
    before = len(out.getvalue())
    enc._encode(0, 0, bytearray(chunks[0]), enc.chunk, bytearray(enc.chunk))
    assert enc.next == 4 and not enc.ready and len(enc.free) == 4
    assert len(out.getvalue()) > before
    cap.writer.close(1)
    cap.writer.end()
    (tmp_path / "s").write_bytes(out.getvalue())
    idx = si.index_stream(tmp_path / "s")   # every CRC and offset checked
    assert idx.files["pages-1.img"].size == len(data)


def test_no_pool_write_once_the_capture_failed(tmp_path):
    """After the capture gave up (its stream file about to go), a finishing chunk is not
    written: the records stop where they were."""
    cap, out, enc = _encoder(tmp_path)
    before = len(out.getvalue())
    with cap.out_lock:
        cap.failed = True
    enc._encode(0, 0, bytearray(mixed(256, 2)), enc.chunk, bytearray(enc.chunk))
    assert len(out.getvalue()) == before


def _drain(fd, into):
    while chunk := os.read(fd, 1 << 16):
        into += chunk


def test_a_slow_output_holds_the_reads_at_the_window(tmp_path):
    """The stream goes to a pipe nobody reads yet: the encoder stops reading criu's pipe
    once `window` chunks are read and not written (criu then waits on its full pipe)
    instead of holding the whole dump in memory; once the output is read, every byte
    arrives, in order."""
    from zdtmpy.codec import Compression
    from zdtmpy.transport import streamformat as sf
    from zdtmpy.transport.capture import Capture
    from zdtmpy.transport.captureblocks import BlockEncoder

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    out = os.fdopen(out_w, "wb")
    cap = Capture(tmp_path, out, Compression("page"))
    cap.writer = sf.StreamWriter(out, cap.spec)   # the header fits in the pipe
    enc = BlockEncoder(cap, cap.writer.open("pages-1.img"))
    data = mixed(40 * enc.chunk // PS, 13)
    fed, errors, got = [0], [], bytearray()

    def feed():   # criu: writes the pages file into its pipe, in pipe-sized pieces
        try:
            for i in range(0, len(data), 1 << 16):
                fed[0] += os.write(in_w, data[i:i + (1 << 16)])
        except OSError as exc:
            errors.append(exc)
        finally:
            os.close(in_w)

    def capture():   # the capture loop's reads of that pipe
        try:
            while enc.read(in_r):
                pass
            enc.finish()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f, daemon=True) for f in (feed, capture)]
    drain = threading.Thread(target=_drain, args=(out_r, got), daemon=True)
    try:
        for t in threads:
            t.start()
        last, still = -1, 0.0
        while still < 1.0 and fed[0] < len(data):   # until the feeder has been stuck 1 s
            time.sleep(0.1)
            still = still + 0.1 if fed[0] == last else 0.0
            last = fed[0]
        held = fed[0]
        assert held <= (cap.window + 2) * enc.chunk < len(data), \
            f"{held} bytes read from criu's pipe while the output was stalled"
    finally:
        drain.start()   # whatever happened: let every thread end
        for t in threads:
            t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    cap.writer.close(1)
    cap.writer.end()
    out.close()
    drain.join(30)
    os.close(in_r)
    os.close(out_r)
    cap._close()
    reader = sf.StreamReader(io.BytesIO(bytes(got)), "test")
    assert b"".join(rec.data() for rec in reader if rec.type == sf.BLOCKS) == data


def test_a_stop_ends_the_wait_for_a_stalled_output(tmp_path):
    """A capture asked to stop while its window is full (its output stalled) raises the
    stop instead of waiting for the output."""
    from zdtmpy.codec import Compression
    from zdtmpy.transport.capture import Capture
    from zdtmpy.transport.streamproto import StreamerError

    cap = Capture(tmp_path, io.BytesIO(), Compression("page"))
    for _ in range(cap.window):   # every place taken, none given back
        assert cap.room.acquire(timeout=0)
    cap.stop()
    try:
        with pytest.raises(StreamerError, match="stopped"):
            cap.wait_room()
    finally:
        cap._close()
