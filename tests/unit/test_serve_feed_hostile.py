"""serve's feed of one file (`Serve._feed`) against crafted streams and a reader that goes
away, by reference (vmsplice, where it works here) and by writev: real streams, real pipes.
A record reaches the pipe only whole and checked; a failure names the stream, the file, the
file offset and (for blocks) the block; nothing is left mapped."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import pytest

from zdtmpy.codec import Compression
from zdtmpy.codec.coding import encode_chunk
from zdtmpy.transport.serve import Serve
from zdtmpy.transport.streamformat import _BLK, BLOCKS, StreamWriter

PS = 4096
MIB = 1 << 20
# ahead: the pool loads records ahead, into fresh memory handed over by vmsplice where
# it works here; inline: the caller's thread loads each, written with writev
PATHS = pytest.mark.parametrize("ahead", [True, False], ids=["ahead", "inline"])


def write_stream(path: Path, files: dict[str, list[tuple[str, object]]]) -> Path:
    """files: name -> records, each ("data", bytes), ("blocks", bytes: encoded on the page
    grid) or ("raw", (n, total, sizes, stored): a BLOCKS record as given)."""
    with open(path, "wb") as f:
        w = StreamWriter(f, Compression("page"))
        for name, recs in files.items():
            fid = w.open(name)
            for kind, arg in recs:
                if kind == "data":
                    w.write(fid, arg)
                    continue
                if kind == "blocks":
                    sizes, stored = encode_chunk(arg, PS)
                    n, total = len(sizes), len(arg)
                else:
                    n, total, sizes, stored = arg
                body = _BLK.pack(PS, n, total) + struct.pack(f"<{len(sizes)}I", *sizes) + \
                    bytes(stored)
                w._record(BLOCKS, fid, w._sizes[fid], body)
                w._sizes[fid] += total
                w.data_bytes += total
            w.close(fid)
        w.end()
    return path


def arena_mappings() -> set[str]:
    """Mappings advised for huge pages (VmFlags 'hg'): pipegift's arenas madvise theirs;
    thread stacks and malloc arenas (new pool threads make some) are not."""
    out, current = set(), ""
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                current = first
            elif first == "VmFlags:" and " hg" in line:
                out.add(current)
    return out


def feed(srv: Serve, name: str, ahead: bool, take: int | None = None) -> bytes:
    """Feed `name` into a real pipe; the reader closes its end after `take` bytes."""
    r, w = os.pipe()
    got: list[bytes] = []

    def drain() -> None:
        n = 0
        while chunk := os.read(r, MIB):
            got.append(chunk)
            n += len(chunk)
            if take is not None and n >= take:
                break
        os.close(r)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    srv._feed(name, w, ahead=ahead)   # closes w
    t.join(30)
    assert not t.is_alive()
    with pytest.raises(OSError):
        os.fstat(w)   # the feed closed criu's pipe end whatever happened
    return b"".join(got)


def prepared(tmp_path: Path, files: dict[str, list[tuple[str, object]]]) -> Serve:
    srv = Serve(tmp_path, write_stream(tmp_path / "s", files))
    srv.prepare()
    return srv


@pytest.fixture(autouse=True)
def warm() -> None:
    """The pool's threads (their stacks are big mappings too) exist before a test looks."""
    Serve.__module__  # noqa: B018
    from zdtmpy.compress.pipeline import pool

    pool()


@PATHS
def test_a_block_that_does_not_decode_stops_the_feed_before_its_record(tmp_path, ahead):
    text = b"some text, compressible " * 100000
    first, second = text[:MIB], text[MIB:2 * MIB]
    sizes, stored = encode_chunk(second, PS)
    k = next(i for i, s in enumerate(sizes) if 0 < s < PS)
    forged = bytearray(stored)
    at = sum(sizes[:k])
    forged[at:at + sizes[k]] = b"\xff" * sizes[k]   # passes its CRC, never decodes
    srv = prepared(tmp_path, {"mem-1.img": [("blocks", first),
                                            ("raw", (len(sizes), MIB, sizes, forged)),
                                            ("blocks", first)]})
    maps = arena_mappings()
    got = feed(srv, "mem-1.img", ahead)
    assert got == first   # the whole record before, nothing of the forged one
    assert srv.errors == [f"mem-1.img: {tmp_path / 's'}: mem-1.img at file offset {MIB}: "
                          f"block {k}: LZ4 block of {sizes[k]} bytes is corrupt (does not "
                          f"decode to {PS} bytes)"]
    assert "mem-1.img" not in srv.served
    assert arena_mappings() <= maps


@PATHS
@pytest.mark.parametrize("change", ["cut", "flip"])
def test_a_stream_changed_after_its_check_fails_the_file_not_criu(tmp_path, ahead, change):
    a, b = os.urandom(3 * MIB), os.urandom(2 * MIB)
    srv = prepared(tmp_path, {"x.img": [("data", a), ("data", b)]})
    path = tmp_path / "s"
    if change == "cut":
        os.truncate(path, path.stat().st_size - MIB)
    else:
        with open(path, "r+b") as f:   # a byte of the second record
            f.seek(len(a) + 1000)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 1]))
    maps = arena_mappings()
    got = feed(srv, "x.img", ahead)
    assert len(srv.errors) == 1 and srv.errors[0].startswith(f"x.img: {path}: x.img: ")
    # records of 1 MiB: a's three, b's two; the cut takes END, CLOSE and most of b's
    # second; the flipped byte (stream byte len(a) + 1000) is in b's first
    if change == "cut":
        assert got == a + b[:MIB]   # the whole records before the cut one
        assert "truncated data record" in srv.errors[0]
    else:
        assert got == a
        assert "checksum mismatch" in srv.errors[0]
    assert arena_mappings() <= maps


@PATHS
@pytest.mark.parametrize("name, recs", [
    ("x.img", [("data", os.urandom(3 * MIB))]),
    ("mem-1.img", [("blocks", b"page " * (MIB // 5) + bytes(MIB - 5 * (MIB // 5)))] * 4),
], ids=["data", "blocks"])
def test_criu_closing_its_end_early_is_a_warning_and_the_feed_ends(tmp_path, ahead, name,
                                                                   recs):
    srv = prepared(tmp_path, {name: recs})
    maps = arena_mappings()
    got = feed(srv, name, ahead, take=1)
    assert 0 < len(got) < srv.index.files[name].size
    assert srv.errors == [] and srv.warnings == [name] and name not in srv.served
    assert arena_mappings() <= maps


@PATHS
def test_empty_records_and_an_empty_file_are_fed_as_they_are(tmp_path, ahead):
    data = os.urandom(2 * MIB + 5)
    srv = prepared(tmp_path, {"x.img": [("data", b""), ("data", data), ("data", b"")],
                              "empty.img": []})
    assert feed(srv, "x.img", ahead) == data
    assert feed(srv, "empty.img", ahead) == b""
    assert srv.errors == [] and srv.served == {"x.img": len(data), "empty.img": 0}


@PATHS
def test_the_largest_zero_records_a_stream_may_hold_are_fed_in_bounded_memory(tmp_path,
                                                                               ahead):
    """4096 zero blocks a record: 16 KiB of stream decoding to 16 MiB, the most a record
    may announce; three of them, streamed through the pipe."""
    n = 4096
    srv = prepared(tmp_path, {"mem-1.img": [("raw", (n, n * PS, [0] * n, b""))] * 3})
    assert (tmp_path / "s").stat().st_size < 64 << 10
    maps = arena_mappings()
    got = feed(srv, "mem-1.img", ahead)
    assert len(got) == 3 * n * PS and not got.strip(b"\0")
    assert srv.errors == []
    assert arena_mappings() <= maps


@PATHS
@pytest.mark.parametrize("sizes, stored, problem", [
    ([PS + 8, PS - 8], 2 * PS, "block 0: compressed_size 4104 is larger than the block "
                               "(4096 bytes)"),
    ([0xFFFFFFFF, 1], 0, "block sizes sum to 4294967296, the record holds 0 bytes"),
    ([7, PS], PS + 7, "block 0: LZ4 block of 7 bytes is corrupt (does not decode to 4096 "
                      "bytes)"),
], ids=["bigger-than-block", "sum-past-32-bits", "short-lz4"])
def test_block_sizes_that_lie_fail_the_file_naming_the_record(tmp_path, ahead, sizes, stored,
                                                               problem):
    """Sizes the pre-check does not decode (it reads no blocks); the feed refuses them
    before any byte of the record, naming the stream, the file, the offset and the block."""
    # 0xff bytes, not random ones: an LZ4 block of 0xff runs past its end on every decoder,
    # while one random 7-byte block in 16 decodes cleanly (to fewer bytes: another message)
    srv = prepared(tmp_path, {"mem-1.img": [("data", b"x" * PS),
                                            ("raw", (2, 2 * PS, sizes, b"\xff" * stored))]})
    maps = arena_mappings()
    assert feed(srv, "mem-1.img", ahead) == b"x" * PS
    assert srv.errors == [f"mem-1.img: {tmp_path / 's'}: mem-1.img at file offset {PS}: "
                          f"{problem}"]
    assert arena_mappings() <= maps
