"""Bounded, ordered parallel processing of chunks; lz4.block releases the GIL, so threads pay."""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar, Union

from ..errors import ImageError

Buf = Union[bytes, bytearray, memoryview]
T = TypeVar("T")
R = TypeVar("R")

CHUNK_BYTES = 1 << 20   # work unit handed to a thread (a multiple of the block size)
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


_WORKERS: int | None = None


def share_cores(processes: int) -> None:
    """This process is one of `processes` sharing the CPUs (an xdist worker): its pool gets
    its share of them only (unless $ZDTMPY_THREADS says otherwise). Before the first use."""
    global _WORKERS
    if _pool is None and not os.environ.get("ZDTMPY_THREADS", "").isdigit():
        _WORKERS = max(1, min(_cpus() // max(1, processes), 8))


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def workers() -> int:
    """Threads for block coding: $ZDTMPY_THREADS, else the CPUs this process may use (<= 8),
    or its share of them (share_cores)."""
    global _WORKERS
    if _WORKERS is None:
        env = os.environ.get("ZDTMPY_THREADS", "")
        _WORKERS = max(1, min(int(env) if env.isdigit() else _cpus(), 8))
    return _WORKERS


def pool() -> ThreadPoolExecutor:
    """A process-wide executor (threads are reused across files and entries)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="zdtmpy-lz4")
        return _pool


def ordered_map(fn: Callable[[T], R], items: Iterable[T],
                window: int | None = None) -> Iterator[R]:
    """Yield fn(item) in order, with at most `window` items in flight (bounded memory)."""
    if workers() == 1:
        for item in items:
            yield fn(item)
        return
    window = window or workers() + 2
    ex = pool()
    pending: collections.deque[Future[R]] = collections.deque()
    try:
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # an error or an abandoned generator: drop the rest, and wait for those already
        # running (they may use files that the caller closes next)
        for fut in pending:
            fut.cancel()
        for fut in pending:
            if not fut.cancelled():
                try:
                    fut.result()
                except BaseException:  # noqa: BLE001, S110 - the first error is the one raised
                    pass


def chunk_size(block_bytes: int) -> int:
    """CHUNK_BYTES rounded to whole blocks (at least one block)."""
    return max(1, CHUNK_BYTES // block_bytes) * block_bytes


def rechunk(source: Buf | Iterable[Buf], size: int, total: int, what: str) -> Iterator[bytes]:
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


class BufferPool:
    """Reusable bytearrays of `size` bytes: memory is touched once, not per chunk.

    get() and put() may be called from any thread (list append/pop are atomic); at most
    `keep` buffers are kept for reuse.
    """

    def __init__(self, size: int, keep: int = 16) -> None:
        self.size = size
        self.keep = keep
        self._free: list[bytearray] = []

    def get(self) -> bytearray:
        try:
            return self._free.pop()
        except IndexError:
            return bytearray(self.size)

    def put(self, buf: bytearray) -> None:
        if len(self._free) < self.keep:
            self._free.append(buf)

    def prefill(self, n: int) -> None:
        """Have up to n buffers (at most `keep`) ready, their memory touched now."""
        while len(self._free) < min(n, self.keep):
            self._free.append(bytearray(self.size))


def pwrite_all(fd: int, parts: Iterable[Buf], offset: int, what: str) -> int:
    """Write the bytes-like `parts` back to back at `offset` (pwritev, any number of parts,
    short writes retried). Returns the number of bytes written."""
    total = 0
    todo: list[Buf] = [p for p in parts if len(p)]   # 1-D buffers of bytes
    i = 0
    while i < len(todo):
        batch = todo[i:i + IOV_MAX]
        want = sum(len(p) for p in batch)
        try:
            n = os.pwritev(fd, batch, offset + total)
        except OSError as exc:
            raise ImageError(f"{what}: write failed: {exc.strerror}") from None
        total += n
        if n == want:
            i += len(batch)
            continue
        # short write: drop what was written and go on from there
        while n:
            if n >= len(todo[i]):
                n -= len(todo[i])
                i += 1
            else:
                todo[i] = todo[i][n:]
                n = 0
    return total


_SHARED_POOLS: dict[tuple[str, int], BufferPool] = {}  # (user, buffer size) -> BufferPool
_shared_lock = threading.Lock()


def shared_pool(user: str, size: int, keep: int) -> BufferPool:
    """One BufferPool per user and buffer size for the whole process: buffers are reused
    across files, entries and sessions instead of being faulted in again each time."""
    with _shared_lock:
        p = _SHARED_POOLS.get((user, size))
        if p is None:
            p = _SHARED_POOLS[(user, size)] = BufferPool(size, keep=keep)
        return p
