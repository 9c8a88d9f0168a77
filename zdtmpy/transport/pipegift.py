"""Handing checked records to criu's pipe by reference (vmsplice) instead of copying them in.

A pipe serialises its two ends: criu's read holds the pipe's lock while it copies into (and
faults in) the task's memory, and a write holds it while it copies a step in, so with
writev every byte costs criu's copy plus serve's copy, one after the other. vmsplice only
links the pages into the pipe: criu's copy is the one left on the critical path.

Safety: a page handed over must never change afterwards (criu may still be reading it, or
have spliced it on into a pipe of its own: `criu page-server --lazy-pages` does). So records
are decoded into fresh anonymous memory (`Arena`), never written again once handed over, and
unmapped by us when every record in it has been handed over; the kernel frees the pages when
the pipe lets go of them. Transparent huge pages make that memory cheap (one fault clears
2 MiB); where the kernel has them off, serve keeps writev (4 KiB fresh pages measured
slower than writev).
"""

from __future__ import annotations

import ctypes
import functools
import os
import select
import threading
import time
from pathlib import Path

from ..errors import StageTimeout
from .streamformat import StreamError

HUGE = 2 << 20            # one transparent huge page (x86-64, arm64 with 4 KiB pages)
CHUNK = 2 * HUGE          # an arena's mapping: room for a few 1 MiB records
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_PROT_RW, _MAP_PRIVATE_ANON, _MADV_HUGEPAGE = 0x3, 0x22, 14
_SPLICE_F_NONBLOCK = 0x2   # the pipe's O_NONBLOCK alone does not stop vmsplice blocking
_MAP_FAILED = ctypes.c_void_p(-1).value


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Libc:
    def __init__(self) -> None:
        lib = ctypes.CDLL(None, use_errno=True)   # this process's libc (find_library forks)
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        self.mmap = lib.mmap
        self.mmap.argtypes = [vp, sz, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        self.mmap.restype = vp
        self.munmap = lib.munmap
        self.munmap.argtypes, self.munmap.restype = [vp, sz], ctypes.c_int
        self.madvise = lib.madvise
        self.madvise.argtypes, self.madvise.restype = [vp, sz, ctypes.c_int], ctypes.c_int
        self.vmsplice = lib.vmsplice
        self.vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong,
                                  ctypes.c_uint]
        self.vmsplice.restype = ctypes.c_ssize_t


@functools.cache
def libc() -> _Libc | None:
    """libc's mmap/munmap/madvise/vmsplice, or None where this is not Linux with them."""
    try:
        return _Libc()
    except (OSError, AttributeError):
        return None


@functools.cache
def usable() -> bool:
    """vmsplice works here and transparent huge pages are not off (then writev is cheaper).
    $ZDTMPY_SERVE_WRITEV=1 forces writev (A/B runs, and a way out)."""
    if os.environ.get("ZDTMPY_SERVE_WRITEV") == "1" or libc() is None:
        return False
    try:
        if "[never]" in THP_SETTING.read_text():
            return False
    except OSError:
        return False
    return _probe()


def _probe() -> bool:
    """One page through a real pipe by vmsplice (seccomp or an old kernel may refuse it)."""
    arena = Arena()
    r, w = os.pipe()
    try:
        span = arena.take(4096)
        ctypes.memmove(span.addr, b"zdtmpy", 6)
        iov = _IOVec(span.addr, 4096)
        ok = libc().vmsplice(w, ctypes.byref(iov), 1, _SPLICE_F_NONBLOCK) == 4096  # type: ignore[union-attr]
        arena.release(span)
        return ok and os.read(r, 4096) == b"zdtmpy" + bytes(4090)
    except OSError:
        return False
    finally:
        arena.close()
        os.close(r)
        os.close(w)


class Span:
    """Fresh, zero-filled memory for one record: `view` to fill it, `addr` to hand it over."""

    __slots__ = ("addr", "size", "view", "_map")

    def __init__(self, mapping: _Mapping, addr: int, size: int) -> None:
        self._map = mapping
        self.addr, self.size = addr, size
        self.view = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")


class _Mapping:
    def __init__(self, size: int) -> None:
        lc = libc()
        assert lc is not None
        base = lc.mmap(None, size + HUGE, _PROT_RW, _MAP_PRIVATE_ANON, -1, 0)
        if base is None or base == _MAP_FAILED:
            err = ctypes.get_errno()
            raise StreamError(f"serve: cannot map {size} bytes for decoding: "
                              f"{os.strerror(err)}")
        self.base, self.length = base, size + HUGE
        self.start = (base + HUGE - 1) & ~(HUGE - 1)   # huge-page aligned
        lc.madvise(self.start, size, _MADV_HUGEPAGE)   # a refusal only costs speed
        self.used = 0
        self.size = size
        self.users = 0        # spans taken and not released
        self.open = True      # still handing out spans

    def unmap_if_done(self) -> None:
        if not self.open and self.users == 0 and self.length:
            libc().munmap(self.base, self.length)  # type: ignore[union-attr]
            self.length = 0


class Arena:
    """Bump allocation of fresh memory, never reused: each mapping is unmapped once it is
    full (or the arena closed) and every span taken from it released. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: _Mapping | None = None
        self._maps: set[_Mapping] = set()

    def take(self, size: int) -> Span:
        need = -(-size // 4096) * 4096 or 4096
        with self._lock:
            m = self._current
            if m is None or m.used + need > m.size:
                if m is not None:
                    m.open = False
                    m.unmap_if_done()
                    if not m.length:
                        self._maps.discard(m)
                m = self._current = _Mapping(max(CHUNK, -(-need // HUGE) * HUGE))
                self._maps.add(m)
            span = Span(m, m.start + m.used, size)
            m.used += need
            m.users += 1
            return span

    def release(self, span: Span) -> None:
        """The span is handed over (or given up): its memory is never touched again."""
        span.view.release()
        with self._lock:
            m = span._map
            m.users -= 1
            m.unmap_if_done()
            if not m.length:
                self._maps.discard(m)

    def close(self) -> None:
        """Unmap everything: the caller is done with every span (whatever it did not
        release is dead: its views are never used again). The pipe keeps the pages it
        holds."""
        with self._lock:
            self._current = None
            for m in self._maps:
                m.open, m.users = False, 0
                m.unmap_if_done()
            self._maps.clear()


def splice_all(fd: int, addr: int, size: int, step: int, idle: float, name: str,
               stop: threading.Event | None = None) -> int:
    """Hand size bytes at addr to a non-blocking pipe by vmsplice, at most `step` a call (criu
    wakes at the end of each). StageTimeout when criu takes nothing for `idle` seconds."""
    lc = libc()
    assert lc is not None
    done = 0
    deadline = time.monotonic() + idle
    iov = _IOVec()
    while done < size:
        iov.base, iov.len = addr + done, min(step, size - done)
        n = lc.vmsplice(fd, ctypes.byref(iov), 1, _SPLICE_F_NONBLOCK)
        if n < 0:
            err = ctypes.get_errno()
            if err == 32:   # EPIPE: criu closed its end
                raise BrokenPipeError(err, os.strerror(err))
            if err not in (11, 4):   # EAGAIN, EINTR
                raise OSError(err, f"vmsplice into criu's pipe: {os.strerror(err)}")
            if stop is not None and stop.is_set():
                raise StreamError(f"{name}: serve stopped")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], min(left, 1.0))[1]:
                if time.monotonic() >= deadline:
                    raise StageTimeout(f"{name}: criu read nothing for {idle:.0f}s")
            continue
        done += n
        deadline = time.monotonic() + idle
    return done
