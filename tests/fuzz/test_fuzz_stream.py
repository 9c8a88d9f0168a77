"""Fuzz the stream format: streams of a real criu dump (plain, per-page and region
blocks) mutated at the byte level, at the record-field level with checksums recomputed
(the records pass their CRC and must be caught by the format's own checks), and at the
record-structure level. extract must be all-or-nothing; serve's pre-check must refuse
before criu could connect; nothing beyond the output directory changes. A stream the
pre-check lets through (it does not decode pages blocks) is then fed to real pipes, file by
file, by reference (vmsplice, where it works here) and by writev: each file arrives exactly
as this test decodes the stream itself, or, from the first record that does not decode, the
feed fails naming the file and the reader has the whole records before it and nothing else."""

import os
import shutil
import struct
import threading
import zlib
from pathlib import Path

import pytest
from fuzzkit import Counts, guard, outcome, sandbox, snapshot
from hypothesis import given
from hypothesis import strategies as st
from imagemut import INTERESTING64

from zdtmpy.codec import Compression
from zdtmpy.codec.coding import encode_chunk
from zdtmpy.transport import streamextract as sx
from zdtmpy.transport import streamformat as sf
from zdtmpy.transport.serve import Serve

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1" / "plain"
MODES = {"off": 0, "page": 4096, "region64k": 64 << 10}
REC = struct.Struct("<BBHIQI")


def build(path, mode):
    block = MODES[mode]
    compression = Compression("off") if not block else Compression("page") \
        if block == 4096 else Compression("region", block)
    with open(path, "wb") as f:
        w = sf.StreamWriter(f, compression)
        for name in sorted(os.listdir(DATA)):
            data = (DATA / name).read_bytes()
            fid = w.open(name)
            if block and name.startswith("pages-"):
                for off in range(0, len(data), 1 << 20):
                    piece = data[off:off + (1 << 20)]
                    sizes, payload = encode_chunk(piece, block)
                    w.blocks(fid, block, len(piece), sizes, payload)
            else:
                w.write(fid, data)
            w.close(fid)
        w.end()


def records(data):
    """[(header fields, payload)] of a well-formed stream (after its header)."""
    out, pos = [], sf.HEADER_SIZE
    while pos < len(data):
        fields = list(REC.unpack_from(data, pos))
        length = fields[-1]
        out.append((fields, data[pos + REC.size:pos + REC.size + length]))
        pos += REC.size + length + 4
    return out


def assemble(head, recs, fix_length=True):
    parts = [head]
    for fields, payload in recs:
        fields = list(fields)
        if fix_length:
            fields[-1] = len(payload)
        h = REC.pack(*fields)
        parts += [h, payload, struct.pack("<I", zlib.crc32(payload, zlib.crc32(h)))]
    return b"".join(parts)


@st.composite
def stream_mutation(draw, nrec):
    level = draw(st.sampled_from(["byte", "field", "structure"]))
    i = draw(st.integers(0, nrec - 1))
    value = draw(st.one_of(st.sampled_from(INTERESTING64), st.integers(0, 1 << 32)))
    blob = draw(st.binary(min_size=1, max_size=16))
    if level == "field":
        what = draw(st.sampled_from(["type", "fid", "offset", "length", "payload", "bb", "n",
                                     "total", "size", "block"]))
        return level, (what, i, value, blob)
    if level == "structure":
        return level, (draw(st.sampled_from(["drop", "repeat", "swap", "cut"])), i, value, blob)
    return level, (draw(st.sampled_from(["flip", "set", "truncate", "insert"])), value, blob)


@st.composite
def block_forgery(draw, blocks):
    """A BLOCKS record's stored bytes overwritten in place, checksum recomputed: what only
    decoding the blocks (serve's feed) can catch. `blocks`: indexes of BLOCKS records."""
    i = draw(st.sampled_from(blocks))
    value = draw(st.integers(0, 1 << 32))
    blob = draw(st.binary(min_size=1, max_size=16))
    return "field", ("block", i, value, blob)


def _bytes_level(data, m):
    op, pos, blob = m
    buf = bytearray(data)
    at = pos % (len(buf) + 1)
    if op == "flip":
        buf[at % len(buf)] ^= 1 << (blob[0] % 8)
    elif op == "set":
        buf[at:at + len(blob)] = blob
    elif op == "truncate":
        del buf[at:]
    else:
        buf[at:at] = blob
    return bytes(buf)


def _blocks_field(payload, op, value, blob):
    bb, n, total = struct.unpack_from("<IIQ", payload)
    if op == "bb":
        bb = value & 0xFFFFFFFF
    elif op == "n":
        n = value & 0xFFFFFFFF
    elif op == "total":
        total = value & ((1 << 64) - 1)
    elif op == "block":   # stored bytes overwritten in place: sizes and length still agree
        start = 16 + 4 * n
        if start < len(payload):
            at = start + value % (len(payload) - start)
            payload[at:at + len(blob)] = blob[:len(payload) - at]
    elif op == "size" and len(payload) >= 20:
        j = 16 + 4 * (value % max(1, min(n, (len(payload) - 16) // 4)))
        struct.pack_into("<I", payload, j, int.from_bytes(blob[:4].ljust(4, b"\0"), "little"))
    struct.pack_into("<IIQ", payload, 0, bb, n, total)


def mutate(data, mut):
    level, m = mut
    if level == "byte":
        return _bytes_level(data, m)
    head, recs = data[:sf.HEADER_SIZE], records(data)
    op, i, value, blob = m
    if level == "structure":
        if op == "drop":
            del recs[i]
        elif op == "repeat":
            recs.insert(i, recs[i])
        elif op == "swap" and i + 1 < len(recs):
            recs[i], recs[i + 1] = recs[i + 1], recs[i]
        elif op == "cut":
            recs = recs[:i]
        return assemble(head, recs)
    fields, payload = recs[i]
    fields = list(fields)
    payload = bytearray(payload)
    k = {"type": 0, "fid": 3, "offset": 4}.get(op)
    if k is not None:
        limit = {0: 0xFF, 3: 0xFFFFFFFF, 4: (1 << 64) - 1}[k]
        fields[k] = value & limit
    elif op == "length":
        fields[5] = value & 0xFFFFFFFF
        recs[i] = (fields, bytes(payload))
        return assemble(head, recs, fix_length=False)
    elif op == "payload":
        payload[value % (len(payload) + 1):] = blob
    elif fields[0] == sf.BLOCKS and len(payload) >= 16:
        _blocks_field(payload, op, value, blob)
    recs[i] = (fields, bytes(payload))
    return assemble(head, recs)


def expected_feed(data):
    """{file name: (its bytes up to its first record that does not decode, whether every
    record decoded)} of a stream the pre-check accepted, decoded here record by record
    (streamformat's decode_blocks, not serve's decoder)."""
    names, out = {}, {}
    for (rtype, _, _, fid, _, _), payload in records(data):
        if rtype == sf.OPEN:
            names[fid] = payload.decode(errors="replace")   # as the reader does
            out[names[fid]] = [b"", True]
        elif rtype in (sf.DATA, sf.BLOCKS) and out[names[fid]][1]:
            try:
                piece = sf.decode_blocks(payload, "x") if rtype == sf.BLOCKS else payload
            except sf.StreamError:
                out[names[fid]][1] = False
                continue
            out[names[fid]][0] += piece
    return {n: (bytes(b), ok) for n, (b, ok) in out.items()}


def feed_every_file(srv, ahead):
    """{name: bytes a reader got} feeding each file of a prepared Serve into a real pipe."""
    got = {}
    for name in srv.index.files:
        r, w = os.pipe()
        parts = []

        def drain(fd=r, into=parts):
            while chunk := os.read(fd, 1 << 20):
                into.append(chunk)
            os.close(fd)

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        srv._feed(name, w, ahead=ahead)   # closes w
        t.join(10)
        assert not t.is_alive(), f"{name}: the pipe was never closed"
        got[name] = b"".join(parts)
    return got


def check_feed(src, out, ahead):
    """Serve's pre-check, then every file fed; ZdtmError (refused) when a file failed."""
    srv = Serve(out, src)
    srv.prepare()
    got = feed_every_file(srv, ahead)
    want = expected_feed(src.read_bytes())
    assert not srv.warnings   # the reader took everything
    for name, (good, whole) in want.items():
        assert got[name] == good, f"{name}: the reader got {len(got[name])} bytes, " \
            f"the stream's whole records up to its first bad one hold {len(good)}"
        failed = [e for e in srv.errors if e.startswith(f"{name}: ")]
        assert bool(failed) == (not whole), f"{name}: {srv.errors}"
        assert (name in srv.served) == whole
    assert len(srv.errors) == sum(not whole for _, whole in want.values())
    if srv.errors:
        raise sf.StreamError("; ".join(srv.errors))


@pytest.mark.parametrize("tool", ["extract", "extract-decompress", "serve-check",
                                  "serve-feed", "serve-feed-writev"])
@pytest.mark.parametrize("mode", list(MODES))
def test_stream_under_mutation(tmp_path_factory, mode, tool):
    counts = Counts(f"stream-{tool}-{mode}")
    base = tmp_path_factory.mktemp("stream")
    build(base / "good", mode)
    good = (base / "good").read_bytes()
    recs = records(good)
    nrec = len(recs)
    mutations = stream_mutation(nrec)
    blocks = [i for i, (fields, _) in enumerate(recs) if fields[0] == sf.BLOCKS]
    if tool.startswith("serve-feed") and blocks:
        mutations = st.one_of(mutations, block_forgery(blocks))

    @given(mut=mutations)
    def case(mut):
        with sandbox(base) as root:
            src = root / "s"
            src.write_bytes(mutate(good, mut))
            out = root / "out"
            out.mkdir()
            outside = snapshot(root, skip=out)

            def run():
                if tool == "serve-check":
                    Serve(out, src).prepare()
                elif tool.startswith("serve-feed"):
                    check_feed(src, out, ahead=tool == "serve-feed")
                else:
                    with open(src, "rb") as f:
                        sx.extract(f, out, "s", decompress=tool == "extract-decompress")

            with guard(f"{tool} {mut}"):
                got = outcome(run)
            counts.add(tool, mode, mut[0], got)
            assert snapshot(root, skip=out) == outside, f"{tool} wrote outside {out}"
            if got == "refused":
                assert os.listdir(out) == [], f"refused {tool} left {os.listdir(out)}"
            shutil.rmtree(out, ignore_errors=True)

    try:
        case()
    finally:
        counts.report()
