"""Bounded, ordered parallel processing of chunks; lz4.block releases the GIL, so threads pay."""

import collections
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ..errors import ImageError

CHUNK_BYTES = 1 << 20   # work unit handed to a thread (a multiple of the block size)
_pool = None
_pool_lock = threading.Lock()


def workers():
    return max(1, min(os.cpu_count() or 1, 8))


def pool():
    """A process-wide executor (threads are reused across files and entries)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="zdtmpy-lz4")
        return _pool


def ordered_map(fn, items, window=None):
    """Yield fn(item) in order, with at most `window` items in flight (bounded memory)."""
    if workers() == 1:
        for item in items:
            yield fn(item)
        return
    window = window or workers() + 2
    ex = pool()
    pending = collections.deque()
    try:
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:  # an error or an abandoned generator: drop the rest
            fut.cancel()


def chunk_size(block_bytes):
    """CHUNK_BYTES rounded to whole blocks (at least one block)."""
    return max(1, CHUNK_BYTES // block_bytes) * block_bytes


def rechunk(source, size, total, what):
    """Yield bytes objects of `size` (the last may be shorter) from `source`, which is a
    bytes-like object or an iterable of bytes-like pieces totalling exactly `total` bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        mv = memoryview(source).cast("B")
        if len(mv) != total:
            raise ImageError(f"{what}: got {len(mv)} bytes of data, expected {total}")
        for off in range(0, total, size):
            yield bytes(mv[off:off + size])
        return
    buf = bytearray()
    seen = 0
    for piece in source:
        seen += len(piece)
        if seen > total:
            raise ImageError(f"{what}: more than the expected {total} bytes of data")
        if not buf and len(piece) == size:
            yield bytes(piece)
            continue
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if seen != total:
        raise ImageError(f"{what}: got {seen} bytes of data, expected {total}")
    if buf:
        yield bytes(buf)
