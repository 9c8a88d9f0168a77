"""Writing a pages file: asynchronous write-behind and the writer's reusable buffers."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

from .pipeline import BufferPool, shared_pool

WRITE_BEHIND = 8 << 20   # start the writeback of every this many bytes written (async)


def _sync_file_range() -> Callable[[int, int, int], int] | None:
    """libc sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda fd, off, n: fn(fd, off, n, 2)  # SYNC_FILE_RANGE_WRITE


start_writeback = _sync_file_range() if sys.platform.startswith("linux") else None


def writer_pool(size: int) -> BufferPool:
    return shared_pool("writer", size, keep=8)
