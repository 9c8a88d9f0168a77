"""Feeding one file of a stream into criu's pipe, as fast as criu reads.

Each record is read, checked (CRC, record header, and for BLOCKS every block decoded) by a
pool thread into buffers reused from record to record, and handed to the pipe with writev:
no allocation per record; a BLOCKS record is decoded whole into one buffer (zeros and raw
blocks included: a pipe copies every byte anyway, and one piece costs no Python work per
run of pages, measured 2/5 of serve's CPU before).
A record is only written once all of it has been checked, so a bad block never reaches
criu: the feed fails naming the file, the file offset and the block.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from array import array
from collections.abc import Callable, Generator, Sequence
from typing import Union

from ..errors import ImageError, StageTimeout
from .crc import crc32
from .pipegift import Arena, Span
from .streamformat import (
    _BLK,
    BLOCKS,
    CRC,
    DATA,
    MAX_PAYLOAD,
    RECORD_HEAD,
    StreamError,
    blocks_header,
)

View = Union[bytes, bytearray, memoryview]
ZERO = bytes(1 << 20)   # zero runs are written from slices of this
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
# A pipe wakes its reader only when a write call ends (and its writer only when a read call
# ends): one 1 MiB writev into criu's 1 MiB pipe makes criu wait for all of it, then serve
# for criu's whole read. Smaller calls let criu copy one part out while the next goes in.
WRITE_STEP = 256 << 10


class Buffers:
    """A free list of bytearrays (at most the records in flight hold one or two each)."""

    def __init__(self, keep: int = 16) -> None:
        self._free: list[bytearray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, n: int) -> bytearray:
        with self._lock:
            while self._free:
                buf = self._free.pop()
                if len(buf) >= n:
                    return buf
        return bytearray(max(n, 1))

    def give(self, bufs: Sequence[bytearray]) -> None:
        with self._lock:
            for buf in bufs:
                if len(self._free) < self._keep:
                    self._free.append(buf)


class Loaded:
    """One checked record: the pieces to write (views into `held`, or `span`'s fresh
    memory to hand over by vmsplice) until `release`."""

    __slots__ = ("offset", "pieces", "held", "nbytes", "span")

    def __init__(self, offset: int, pieces: list[View], held: list[bytearray],
                 nbytes: int, span: Span | None = None) -> None:
        self.offset = offset   # in the file
        self.pieces = pieces
        self.held = held
        self.nbytes = nbytes
        self.span = span


def _zero_views(n: int, add: Callable[[View], None]) -> None:
    zmv = memoryview(ZERO)
    while n > 0:
        k = min(n, len(ZERO))
        add(zmv[:k])
        n -= k


def _zero(buf: bytearray, n: int) -> None:
    mv = memoryview(buf)
    for off in range(0, n, len(ZERO)):
        k = min(n - off, len(ZERO))
        mv[off:off + k] = ZERO[:k]


def load_record(fd: int, pos: int, where: str, bufs: Buffers,
                arena: Arena | None = None) -> Loaded:
    """Read, check and decode the DATA/BLOCKS record at `pos` of an open stream file (pread:
    any thread). StreamError naming `where` (the file) and the record on any problem.
    With an arena, the record's bytes end up in a fresh span of it (to hand over)."""
    head = os.pread(fd, RECORD_HEAD.size, pos)
    if len(head) < RECORD_HEAD.size:
        raise StreamError(f"{where}: truncated record header at byte {pos}")
    rtype, _, _, _, offset, length = RECORD_HEAD.unpack(head)
    if rtype not in (DATA, BLOCKS) or length > MAX_PAYLOAD:
        raise StreamError(f"{where}: record at byte {pos} is not a data record any more")
    need = length + CRC.size
    span = arena.take(length) if arena is not None and rtype == DATA else None
    src = bufs.take(CRC.size if span is not None else need)
    held = [src]
    try:
        smv = memoryview(src)
        into = [span.view, smv[:CRC.size]] if span is not None else [smv[:need]]
        if os.preadv(fd, into, pos + RECORD_HEAD.size) < need:
            raise StreamError(f"{where}: truncated data record at byte {pos}")
        payload = span.view if span is not None else smv[:length]
        crc = CRC.unpack_from(src, 0 if span is not None else length)[0]
        if crc != crc32(payload, crc32(head)):
            raise StreamError(f"{where}: checksum mismatch in the record at byte {pos} "
                              f"(file offset {offset}): the stream is corrupt")
        if rtype == DATA:
            return Loaded(offset, [payload], held, length, span)
        return _decode(payload, length, offset, where, bufs, held, arena)
    except BaseException:
        bufs.give(held)
        if span is not None:
            arena.release(span)  # type: ignore[union-attr]
        raise


def _decode(payload: memoryview, length: int, offset: int, where: str, bufs: Buffers,
            held: list[bytearray], arena: Arena | None) -> Loaded:
    from ..codec.coding import decode_into, decode_whole_into

    where = f"{where} at file offset {offset}"
    bb, n, total = blocks_header(payload, length, where)
    start = _BLK.size + 4 * n
    sizes = array("I")   # u32 on Linux; the codec's C call takes it as it is
    sizes.frombytes(payload[_BLK.size:start])
    if sys.byteorder != "little":
        sizes.byteswap()
    if sum(sizes) != length - start:
        raise StreamError(f"{where}: block sizes sum to {sum(sizes)}, the record holds "
                          f"{length - start} bytes")
    if arena is not None:   # fresh memory is zeros: zero blocks need no writing
        span = arena.take(total)
        if decode_whole_into(payload[start:], sizes, bb, total, span.view, 0, False):
            return Loaded(offset, [span.view[:total]], held, total, span)
        arena.release(span)
    out = bufs.take(total)
    held.append(out)
    if decode_whole_into(payload[start:], sizes, bb, total, out):
        return Loaded(offset, [memoryview(out)[:total]], held, total)  # one piece
    _zero(out, total)   # no fast path here, or a bad block: decode again, saying which
    try:
        parts = decode_into(payload[start:], length - start, sizes, bb, total, out)
    except ImageError as exc:
        raise StreamError(f"{where}: {exc}") from None
    pieces: list[View] = []
    add = pieces.append
    for p in parts:
        if isinstance(p, int):
            _zero_views(p, add)
        else:
            add(p)
    return Loaded(offset, pieces, held, sum(len(p) for p in pieces))


def records(fd: int, positions: Sequence[int], where: str, ahead: bool = True,
            arena: Arena | None = None) -> Generator[Loaded, None, None]:
    """The checked records at `positions`, in order and back to back in the file, loaded
    in the shared thread pool a few records ahead (bounded: the pool's window), or by the
    caller's thread without `ahead`. A record's buffers are reused once the caller asks for
    the next one. Close the generator (contextlib.closing) before freeing what the loads
    use (the file, the arena)."""
    from ..compress.pipeline import ordered_map

    bufs = Buffers()
    expect = 0
    load = (lambda pos: load_record(fd, pos, where, bufs, arena))   # noqa: E731
    loaded = ordered_map(load, positions) if ahead else map(load, positions)
    try:
        for rec in loaded:
            if rec.offset != expect:
                raise StreamError(f"{where}: record at file offset {rec.offset}, expected "
                                  f"{expect} (the stream changed after it was checked)")
            expect += rec.nbytes
            yield rec
            release(rec, bufs, arena)
    finally:   # the pool's records still in flight are done before the caller goes on
        close = getattr(loaded, "close", None)
        if close is not None:
            close()


def release(rec: Loaded, bufs: Buffers, arena: Arena | None) -> None:
    """The record is written or handed over: its buffers are free for the next ones."""
    bufs.give(rec.held)
    rec.held = []
    if rec.span is not None and arena is not None:
        rec.pieces = []   # views of memory that is unmapped next: never to be used again
        arena.release(rec.span)
        rec.span = None


def write_all(fd: int, pieces: Sequence[View], idle: float, name: str,
              stop: threading.Event | None = None) -> int:
    """Every piece into a non-blocking pipe with writev, in order, at most WRITE_STEP bytes
    a call. StageTimeout when the reader takes nothing for `idle` seconds; returns the bytes
    written."""
    views = _step_views(pieces)
    total = 0
    i = 0
    deadline = time.monotonic() + idle
    while i < len(views):
        j, want = i, 0
        while j < len(views) and j - i < IOV_MAX and want < WRITE_STEP:
            want += len(views[j])
            j += 1
        try:
            n = os.writev(fd, views[i:j])
        except BlockingIOError:
            left = deadline - time.monotonic()
            if stop is not None and stop.is_set():
                raise StreamError(f"{name}: serve stopped") from None
            if left <= 0 or not select.select([], [fd], [], min(left, 1.0))[1]:
                if time.monotonic() >= deadline:
                    raise StageTimeout(f"{name}: criu read nothing for {idle:.0f}s") from None
            continue
        total += n
        deadline = time.monotonic() + idle
        while n:
            k = len(views[i])
            if n >= k:
                n -= k
                i += 1
            else:
                views[i] = views[i][n:]
                n = 0
    return total


def _step_views(pieces: Sequence[View]) -> list[memoryview]:
    """The pieces as byte views of at most WRITE_STEP bytes each (empty ones dropped)."""
    views = []
    for p in pieces:
        mv = memoryview(p).cast("B") if not isinstance(p, bytes) else memoryview(p)
        if len(mv) <= WRITE_STEP:
            if len(mv):
                views.append(mv)
            continue
        views.extend(mv[o:o + WRITE_STEP] for o in range(0, len(mv), WRITE_STEP))
    return views
