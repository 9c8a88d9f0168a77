"""The codec in memory against its ceiling: python-lz4's block functions on one core.

No files and no fsync: the same bytes coded by zdtmpy's BlockCodec the way the writer codes
them (chunks on the worker threads, encodings into reused buffers) and by a plain loop of
lz4.block.compress / lz4.block.decompress in one thread, block by block. The ratio of the
two throughputs says how close the codec gets to what the library itself can do, whatever
else the machine is doing (both are measured back to back; CPU seconds are reported too).
Target: codec >= 1.6x the one-core ceiling on 2 cores, compress and decompress.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

PAGE = 4096
TARGET = 1.6


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of fn()."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def _ceiling(data: bytes, block: int) -> dict[str, Any]:
    """python-lz4 block by block in this thread: the library's one-core speed."""
    import lz4.block

    compress, decompress = lz4.block.compress, lz4.block.decompress
    mv = memoryview(data)
    blocks = [mv[o:o + block] for o in range(0, len(data), block)]
    out: list[bytes] = []

    def enc() -> None:
        out[:] = [compress(b, mode="fast", acceleration=1, store_size=False) for b in blocks]

    def dec() -> None:
        for b, o in zip(blocks, out):
            decompress(o, uncompressed_size=len(b))

    cw, cc = _timed(enc)
    dw, dc = _timed(dec)
    return {"compress": (cw, cc), "decompress": (dw, dc)}


def _codec(data: bytes, block: int) -> dict[str, Any]:
    """zdtmpy's codec as the writer drives it: chunks on the pool's threads, encodings into
    reused buffers; decoding into reused buffers the same way."""
    from ..codec.coding import LZ4_CODEC
    from ..compress.pipeline import chunk_size, ordered_map, shared_pool

    chunk = chunk_size(block)
    src = bytearray(data)
    mv = memoryview(src)
    starts = range(0, len(src), chunk)
    outs = shared_pool("bench-out", chunk + block + (block >> 7) + 64, keep=16)
    decs = shared_pool("bench-dec", chunk, keep=16)
    stored: list[tuple[list[int], bytes]] = []

    def encode_one(start: int) -> tuple[list[int], bytes]:
        n = min(chunk, len(src) - start)
        piece = bytearray(mv[start:start + n]) if n != chunk else None
        buf = piece if piece is not None else src[start:start + n]
        out = outs.get()
        try:
            sizes, parts = LZ4_CODEC.encode_into(buf, n, out, block)
            return sizes, b"".join(parts)
        finally:
            outs.put(out)

    def enc() -> None:
        stored[:] = list(ordered_map(encode_one, starts))

    def decode_one(item: tuple[int, tuple[list[int], bytes]]) -> None:
        start, (sizes, payload) = item
        n = min(chunk, len(src) - start)
        out = decs.get()
        try:
            LZ4_CODEC.decode_into(payload, len(payload), sizes, block, n, out)
        finally:
            decs.put(out)

    def dec() -> None:
        for _ in ordered_map(decode_one, zip(starts, stored)):
            pass

    cw, cc = _timed(enc)
    dw, dc = _timed(dec)
    return {"compress": (cw, cc), "decompress": (dw, dc)}


def measure(data: bytes, block: int) -> dict[str, Any]:
    """One pattern, one block size: codec vs ceiling, wall and CPU, and the ratio."""
    from ..compress.pipeline import workers

    size = len(data) - len(data) % block
    data = data[:size]
    ceiling = _ceiling(data, block)
    ours = _codec(data, block)
    row: dict[str, Any] = {"block": block, "bytes": size, "threads": workers()}
    for action in ("compress", "decompress"):
        (cw, cc), (ow, oc) = ceiling[action], ours[action]
        row[action] = {
            "ceiling_mbps": size / cw / 1e6, "codec_mbps": size / ow / 1e6,
            "ceiling_cpu_s": cc, "codec_cpu_s": oc,
            "ratio": cw / ow,               # codec speed / one-core ceiling (wall)
            "cpu_ratio": cc / oc if oc else None,   # CPU per byte: ceiling / codec
            "met": cw / ow >= TARGET,
        }
    return row
