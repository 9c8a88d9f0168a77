"""capture's pages files: each one cut into chunks of whole blocks as criu's pipe is read,
every chunk encoded and its BLOCKS record written by the shared thread pool, in file order.

The capture loop is the one thread that reads criu's pipes, and criu cannot send more than
a pipe holds until it has been read: so the pool threads, not the loop, write the records
(the stream file write was the loop's largest item after the reads, 0.18-0.25 s of CPU per
GiB of pages), and a chunk's buffers come back to its file's free list once written. The
loop waits only when `Capture.window` chunks are read and not yet written (a slow output):
memory stays bounded, and criu waits on its full pipe.
"""

from __future__ import annotations

import collections
import os
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ..codec.algorithm import Buffer
from .streamformat import blocks_record

if TYPE_CHECKING:
    from .capture import Capture

Record3 = tuple[bytes, Buffer, bytes]
_OUT = threading.local()   # a pool thread's encode buffer, reused from chunk to chunk


def _encode_record(fid: int, offset: int, data: bytearray, n: int, block: int,
                   acceleration: int, out: bytearray) -> Record3:
    """In a pool thread: data[:n]'s blocks encoded in one native call where there is one
    (no Python work per block), and its whole record with its CRC. `data` is free again
    when this returns; the record's payload may be a view into `out` (at least n bytes),
    busy until written."""
    from ..codec.coding import LZ4_CODEC

    packed = LZ4_CODEC.encode_packed(data, n, out, block, acceleration)
    if packed is not None:   # the payload whole in out: nothing to join
        sizes, m = packed
        return blocks_record(fid, offset, block, n, sizes, memoryview(out)[:m])
    need = n + LZ4_CODEC.algorithm.bound(block) + 64   # no packed path here: join pieces
    scratch: bytearray | None = getattr(_OUT, "buf", None)
    if scratch is None or len(scratch) < need:
        scratch = _OUT.buf = bytearray(need)
    listed, parts = LZ4_CODEC.encode_into(data, n, scratch, block, acceleration)
    return blocks_record(fid, offset, block, n, listed, b"".join(parts))


class BlockEncoder:
    """Encodes one pages file as it arrives: criu's pipe is read straight into chunk
    buffers of whole blocks (no copy, no allocation per read), full chunks go to the shared
    thread pool (the codec releases the GIL), and the pool threads write the records too,
    in file order, and give the buffers back: the capture loop, the one thread that reads
    criu's pipes, does not wait for a write unless the window of unwritten chunks is full
    (criu cannot send more than a pipe holds until it has been read)."""

    def __init__(self, cap: Capture, fid: int) -> None:
        from ..compress.pipeline import chunk_size

        self.cap, self.fid = cap, fid
        self.block = cap.spec.block_pages * 4096
        self.chunk = chunk_size(self.block)
        self.free: list[tuple[bytearray, bytearray]] = []   # (chunk, payload) buffers
        self.buf, self.out = bytearray(self.chunk), bytearray(self.chunk)
        self.fill = 0
        self.submitted = 0  # decoded bytes handed to the pool so far
        self.seq = 0        # chunks handed to the pool so far
        self.inflight: collections.deque[Future[None]] = collections.deque()  # in order
        # records encoded and not written yet, by chunk number; the next one to write;
        # whether a pool thread is writing (it writes every record that is next in turn)
        self.lock = threading.Lock()
        self.ready: dict[int, tuple[int, int, Record3, tuple[bytearray, bytearray]]] = {}
        self.next = 0
        self.writing = False

    def read(self, fd: int) -> int:
        """One read of criu's pipe into the current chunk; the bytes read (0: EOF)."""
        n = os.readv(fd, [memoryview(self.buf)[self.fill:]])
        self.fill += n
        if self.fill == self.chunk:
            self._submit()
            self.drain()
        return n

    def _submit(self) -> None:
        from ..compress.pipeline import pool

        self.cap.wait_room()   # backpressure: at most `window` chunks not yet written
        fut = pool().submit(self._encode, self.seq, self.submitted, self.buf, self.fill,
                            self.out)
        self.inflight.append(fut)
        self.seq += 1
        self.submitted += self.fill
        self.buf, self.out = self.free.pop() if self.free else \
            (bytearray(self.chunk), bytearray(self.chunk))
        self.fill = 0

    def _encode(self, seq: int, offset: int, buf: bytearray, n: int, out: bytearray) -> None:
        """In a pool thread: encode chunk `seq`, then write every record that is next in
        turn unless another pool thread is at it (that one writes this one too)."""
        record = _encode_record(self.fid, offset, buf, n, self.block,
                                self.cap.spec.acceleration, out)
        with self.lock:
            self.ready[seq] = (offset, n, record, (buf, out))
            if self.writing:
                return
            self.writing = True
        del record
        while True:
            with self.lock:
                item = self.ready.pop(self.next, None)
                if item is None:
                    self.writing = False
                    return
                self.next += 1
            # on an error writing stays True: nothing more is written, the loop raises it
            with self.cap.out_lock:
                if self.cap.failed:   # the capture is being torn down: no more writes
                    return
                self.cap.writer.put_blocks(self.fid, item[0], item[1], item[2])
            self.free.append(item[3])   # written: its payload view is not used again
            self.cap.room.release()
            del item

    def drain(self, block: bool = False) -> None:
        """Take the finished chunks off the window (raising the pool's error, if any);
        with block, wait for the oldest one first."""
        while self.inflight and (block or self.inflight[0].done()):
            self.inflight.popleft().result()
            block = False

    def finish(self) -> None:
        """Every chunk encoded and written (a chunk's task ends after the writes it took
        on, so all tasks done means all records written)."""
        if self.fill:
            self._submit()
        while self.inflight:
            self.drain(block=True)
