"""The codec in memory against its ceiling: python-lz4's block functions on one core.

No files and no fsync: the same bytes coded by zdtmpy's BlockCodec the way the writer codes
them (chunks on the worker threads, encodings into reused buffers) and by a plain loop of
lz4.block.compress / lz4.block.decompress in one thread, block by block. The ratio of the
two throughputs says how close the codec gets to what the library itself can do, whatever
else the machine is doing (both are measured back to back; CPU seconds are reported too).
Target: codec >= 1.6x the one-core ceiling on 2 cores, compress and decompress.
"""

from __future__ import annotations

import collections
import resource
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

PAGE = 4096
TARGET = 1.6
CODER_ROUNDS = 3   # the coder alone on one thread: best of this many


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of fn()."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def _ceiling(data: bytes, block: int) -> dict[str, Any]:
    """python-lz4 block by block in this thread: the library's one-core speed. The blocks
    that are all zero and the others are timed apart: the others' CPU seconds are the
    library work no block layout can skip (bench compress's floor)."""
    import lz4.block

    from ..codec.blocks import zeros

    compress, decompress = lz4.block.compress, lz4.block.decompress
    mv = memoryview(data)
    blocks = [mv[o:o + block] for o in range(0, len(data), block)]
    kinds = {"data": [b for b in blocks if not zeros(len(b)).startswith(b)],
             "zero": [b for b in blocks if zeros(len(b)).startswith(b)]}
    out: dict[str, list[bytes]] = {}
    res: dict[str, Any] = {}
    for kind, some in kinds.items():
        def enc(some: list[memoryview] = some, kind: str = kind) -> None:
            out[kind] = [compress(b, mode="fast", acceleration=1, store_size=False)
                         for b in some]

        def dec(some: list[memoryview] = some, kind: str = kind) -> None:
            for b, o in zip(some, out[kind]):
                decompress(o, uncompressed_size=len(b))

        res[kind] = {"compress": _timed(enc), "decompress": _timed(dec)}
    return {action: tuple(res["data"][action][i] + res["zero"][action][i] for i in (0, 1))
            + (res["data"][action][1],) for action in ("compress", "decompress")}


def _codec(data: bytes, block: int) -> dict[str, Any]:
    """zdtmpy's codec as the writer drives it: chunks on the pool's threads (all-zero chunks
    found in the caller's thread, as feed() does), encodings into
    reused buffers; decoding into reused buffers the same way. The chunks are in buffers of
    their own before the clock starts (the writer reads them into pooled buffers), and the
    encodings are not copied anywhere (the writer hands them to pwritev as they are).
    Per action: (wall s, CPU s) through the pool, and the CPU seconds of the same chunks
    coded one after the other on this thread."""
    from ..codec.coding import LZ4_CODEC
    from ..compress.pipeline import chunk_size, ordered_map, pool, shared_pool, workers
    from ..compress.writerfeed import window

    chunk = chunk_size(block)
    chunks = [bytearray(data[o:o + chunk]) for o in range(0, len(data), chunk)]
    outs = shared_pool("bench-out", chunk + block + (block >> 7) + 64, keep=16)
    decs = shared_pool("bench-dec", chunk, keep=16)

    def encode_one(src: bytearray) -> tuple[list[int], list[Any], bytearray]:
        out = outs.get()
        sizes, parts = LZ4_CODEC.encode_into(src, len(src), out, block)
        return sizes, parts, out

    # untimed: the stored form decoding starts from, and warm pooled buffers (both pools:
    # the writer's are process-wide and warm after its first chunks)
    stored: list[tuple[list[int], bytes]] = []
    for sizes, parts, out in ordered_map(encode_one, chunks):
        stored.append((sizes, b"".join(parts)))
        outs.put(out)
    warm = [decs.get() for _ in range(workers() + 2)]   # ordered_map's window
    for buf in warm:
        decs.put(buf)

    def enc() -> None:
        # as the writer's feed(): an all-zero chunk is found in this thread, the others go
        # to the pool, at most window() in flight, their results taken in order
        ex, limit = pool(), window()
        pending: collections.deque[Future[tuple[list[int], list[Any], bytearray]] | None] \
            = collections.deque()
        for src in chunks:
            pending.append(None if LZ4_CODEC.all_zero(src, len(src))
                           else ex.submit(encode_one, src))
            while len(pending) > limit:
                done = pending.popleft()
                if done is not None:
                    outs.put(done.result()[2])
        for done in pending:
            if done is not None:
                outs.put(done.result()[2])

    def decode_one(item: tuple[bytearray, tuple[list[int], bytes]]) -> None:
        src, (sizes, payload) = item
        out = decs.get()
        try:
            LZ4_CODEC.decode_into(payload, len(payload), sizes, block, len(src), out)
        finally:
            decs.put(out)

    def dec() -> None:
        for _ in ordered_map(decode_one, zip(chunks, stored)):
            pass

    def enc_here() -> None:   # the same work on this thread alone: no pool, no hand-offs
        for src in chunks:
            outs.put(encode_one(src)[2])

    def dec_here() -> None:
        for item in zip(chunks, stored):
            decode_one(item)

    cw, cc = _timed(enc)
    dw, dc = _timed(dec)
    # the coder's cost per layout is compared between layouts: the least of a few rounds
    return {"compress": (cw, cc, min(_timed(enc_here)[1] for _ in range(CODER_ROUNDS))),
            "decompress": (dw, dc, min(_timed(dec_here)[1] for _ in range(CODER_ROUNDS)))}


def measure(data: bytes, block: int) -> dict[str, Any]:
    """One pattern, one block size: codec vs ceiling, wall and CPU, and the ratio."""
    from ..compress.pipeline import workers

    size = len(data) - len(data) % block
    data = data[:size]
    ceiling = _ceiling(data, block)
    ours = _codec(data, block)
    row: dict[str, Any] = {"block": block, "bytes": size, "threads": workers()}
    for action in ("compress", "decompress"):
        (cw, cc, data_cc), (ow, oc, one) = ceiling[action], ours[action]
        row[action] = {
            "ceiling_mbps": size / cw / 1e6, "codec_mbps": size / ow / 1e6,
            "ceiling_cpu_s": cc, "codec_cpu_s": oc,
            # the coder's own work, chunk by chunk on one thread (what a layout costs per
            # byte, without the pool's hand-offs)
            "coder_cpu_s": one,
            "ceiling_data_cpu_s": data_cc,   # of that, the blocks that are not all zero
            "ratio": cw / ow,               # codec speed / one-core ceiling (wall)
            "cpu_ratio": cc / oc if oc else None,   # CPU per byte: ceiling / codec
            "met": cw / ow >= TARGET,
        }
    return row
