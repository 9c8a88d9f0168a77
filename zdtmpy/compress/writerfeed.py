"""PagemapWriter's pipelined entries: begin() + feed() queue the work, the workers encode
chunks as they are fed, and the chunks are written in order behind the caller."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar, Union, cast

from ..codec import Compression
from ..codec.algorithm import Buffer, Piece
from ..codec.blocks import BlockCodec, zeros
from ..errors import ImageError
from ..images.messages import Message
from ..images.pagemap import PAGE_SIZE, PE_PAYLOAD_ALIGNED, PE_PRESENT
from .pagesout import writer_pool
from .pipeline import BufferPool, chunk_size, workers
from .pipeline import pool as worker_pool

V = TypeVar("V")
Release = Callable[[bytearray], None]
Reader = Callable[[], bytearray]   # run by a worker: the buffer holding a chunk's bytes
# one fed chunk done: the stored block sizes (None: `parts` are pieces, ints = zero runs),
# the parts to write, the output buffer to give back to its pool once written, and the
# buffer a worker read the chunk into (feed_read; None: the fed buffer)
ChunkResult = tuple[Union[list[int], None], Sequence[Piece],
                    Union[tuple[BufferPool, bytearray], None], Union[bytearray, None]]
Task = Union[Future[ChunkResult], "Ready[ChunkResult]"]
# (task or None = the entry ends here, the entry, (fed buffer, release) or None) in order
# (fed buffer or None: read by the worker, release, bytes fed, where they are in the
# source pages file or None)
Held = tuple[Union[bytearray, None], Union[Release, None], int, Union[int, None]]
Queued = tuple[Union[Task, None], "PendingEntry", Union[Held, None]]


def _slack(block_bytes: int) -> int:
    return block_bytes + (block_bytes >> 7) + 64   # the LZ4 bound of the last block


def output_pool(block_bytes: int) -> BufferPool:
    """The reusable output buffers of fed chunks of `block_bytes` blocks."""
    return writer_pool(chunk_size(block_bytes) + _slack(block_bytes))


def window() -> int:
    """Fed chunks in flight at most: bounded memory, busy workers."""
    return 2 * workers() + 2


class PendingEntry:
    """An entry on its way to the files: its message and what its stored blocks decided."""

    __slots__ = ("msg", "flags", "nr_pages", "template", "sizes", "first_stored", "fed",
                 "where")

    def __init__(self, msg: Message, flags: int, nr_pages: int, template: Message | None,
                 where: str | None) -> None:
        self.msg, self.flags, self.nr_pages, self.template = msg, flags, nr_pages, template
        self.sizes: list[int] = []
        self.first_stored: int | None = None
        self.fed = 0
        self.where = where


class Ready(Generic[V]):
    """A result computed in the caller's thread, looking like a finished future."""

    __slots__ = ("value",)

    def __init__(self, value: V) -> None:
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> V:
        return self.value


class PipelinedEntries:
    """Mixed into PagemapWriter (whose state and _store_chunk/_end_entry it uses)."""

    if TYPE_CHECKING:  # PagemapWriter's, used here
        dir: Path
        pagemap_name: str
        spec: Compression
        codec: BlockCodec
        _state: str

        def _where(self) -> str: ...
        def _begin(self, vaddr: int, nr_pages: int, flags: int,
                   template: Message | None) -> Message: ...
        def _store_chunk(self, ent: PendingEntry, csizes: list[int],
                         parts: Sequence[Buffer], same_at: int | None = None) -> None: ...
        def _end_entry(self, ent: PendingEntry) -> None: ...
        def _write_pieces(self, pieces: Sequence[Piece]) -> None: ...

    def _init_pipeline(self) -> None:
        self._queue: collections.deque[Queued] = collections.deque()
        self._inflight = 0       # chunks in that queue
        self._cur: PendingEntry | None = None   # the begun PE_PRESENT entry still being fed

    # -- pipelined entries -------------------------------------------------------------
    #
    # add() returns once its entry is in the files, which leaves the worker threads idle
    # between entries when entries arrive one by one (a page server gets ~3 MiB at a time).
    # begin()/feed() queue the work instead: chunks are encoded by the workers as they are
    # fed and written here in order (an entry's offset depends on every earlier entry's
    # stored size), whenever the caller comes back, so entry k+1 is encoded while entry k
    # is still being written.

    def begin(self, vaddr: int, nr_pages: int, flags: int,
              template: Message | None = None) -> None:
        """Start an entry as add() does, without its payload: a PE_PRESENT entry's payload
        follows through feed(). Returns at once; the entry reaches the files in order."""
        self._check_fed()
        where = self._where()
        msg = self._begin(vaddr, nr_pages, flags, template)
        ent = PendingEntry(msg, flags & ~PE_PAYLOAD_ALIGNED, nr_pages, template, where)
        if flags & PE_PRESENT:
            self._cur = ent
        else:
            self._queue.append((None, ent, None))
            self._retire(window())

    def feed(self, buf: bytearray, n: int, release: Release | None = None,
             same_at: int | None = None) -> None:
        """The next n payload bytes of the begun entry: the first n bytes of the bytearray
        `buf`, a whole number of blocks unless they end the entry. buf must stay unchanged
        until release(buf) is called (from this thread, once its bytes are written).
        same_at: where these bytes were read in the source pages file (see KeptPages)."""
        ent = self._accept(n)
        block_bytes = self.spec.block_pages * PAGE_SIZE
        if not self.spec.enabled:
            view = memoryview(buf)[:n]
            pieces: list[Piece] = [n] if zeros(n).startswith(view) else [view]
            task: Task = Ready((None, pieces, None, None))
        elif workers() == 1:
            task = Ready(self._encode_fed(buf, n))
        elif self.codec.all_zero(buf, n):
            # all zero (common in memory images): one scan here at memory speed costs less
            # than the hand-off to a worker and back (a worker would only scan it too)
            task = Ready(([0] * -(-n // block_bytes), [], None, None))
        else:
            task = worker_pool().submit(self._encode_fed, buf, n)
        self._queued(ent, task, (buf, release, n, same_at))

    def feed_read(self, n: int, read: Reader, release: Release | None = None,
                  same_at: int | None = None) -> None:
        """As feed(), for n bytes that the worker encoding them reads itself: read(), run
        by that worker, returns the bytearray holding them (release(buf) as for feed()).
        The reading of the next chunks is then spread over the workers instead of
        being done here, one chunk after the other, ahead of them."""
        if not self.spec.enabled:
            return self.feed(read(), n, release, same_at)
        ent = self._accept(n)
        task: Task = Ready(self._read_encode(read, n)) if workers() == 1 else \
            worker_pool().submit(self._read_encode, read, n)
        self._queued(ent, task, (None, release, n, same_at))

    def _accept(self, n: int) -> PendingEntry:
        """The begun entry, after checking that n more bytes of it may come now."""
        ent = self._cur
        if ent is None or self._state != "open":
            raise ImageError(f"{self.dir / self.pagemap_name}: feed() without a begun "
                             "PE_PRESENT entry")
        total = ent.nr_pages * PAGE_SIZE
        block_bytes = self.spec.block_pages * PAGE_SIZE
        if n <= 0 or ent.fed + n > total or (ent.fed + n < total and n % block_bytes):
            raise ImageError(f"{ent.where}: fed {n} bytes at {ent.fed} of {total}: expected "
                             f"whole blocks of {block_bytes} bytes up to the entry's end")
        ent.fed += n
        return ent

    def _queued(self, ent: PendingEntry, task: Task, held: Held) -> None:
        self._queue.append((task, ent, held))
        self._inflight += 1
        if ent.fed == ent.nr_pages * PAGE_SIZE:
            self._cur = None
            self._queue.append((None, ent, None))
        self._retire(window())

    def drain(self) -> None:
        """Wait until everything begun so far is written (files stay open)."""
        self._retire(-1)

    def _encode_fed(self, buf: bytearray, n: int) -> ChunkResult:
        block_bytes = self.spec.block_pages * PAGE_SIZE
        outpool = output_pool(block_bytes)
        out = outpool.get() if n <= chunk_size(block_bytes) else \
            bytearray(n + _slack(block_bytes))
        sizes, parts = self.codec.encode_into(buf, n, out, block_bytes, self.spec.acceleration)
        return sizes, parts, (outpool, out), None

    def _read_encode(self, read: Reader, n: int) -> ChunkResult:
        buf = read()
        sizes, parts, out, _ = self._encode_fed(buf, n)
        return sizes, parts, out, buf

    def _retire(self, limit: int) -> None:
        """Write the finished work at the head of the queue; while more than `limit` chunks
        are in flight, wait for the oldest."""
        q = self._queue
        while q:
            task, ent, held = q[0]
            if task is not None and self._inflight <= limit and not task.done():
                return
            q.popleft()
            if task is None:
                self._end_entry(ent)
                continue
            self._inflight -= 1
            try:
                sizes, parts, out, read_into = task.result()
            except ImageError:
                self._state = "failed"
                raise
            except Exception as exc:
                self._state = "failed"
                raise ImageError(f"{ent.where}: encoding failed: {exc!r}") from None
            assert held is not None  # every queued chunk holds its fed buffer
            buf, release, n, same_at = held
            if read_into is not None:   # feed_read: the buffer its worker read
                buf = read_into
            if sizes is None:
                self._write_pieces(parts)
            else:  # encoded chunks hold bytes-like parts only (no zero-run ints)
                raw = sum(sizes) == n   # every block stored raw: the fed bytes unchanged
                self._store_chunk(ent, sizes, cast("Sequence[Buffer]", parts),
                                  same_at if raw else None)
            del parts   # drop the views into `out` before it goes back to its pool
            if out is not None:
                out[0].put(out[1])
            if release is not None and buf is not None:
                release(buf)

    def _check_fed(self) -> None:
        if self._cur is not None:
            ent = self._cur
            raise ImageError(f"{ent.where}: only {ent.fed} of {ent.nr_pages * PAGE_SIZE} "
                             "payload bytes were fed")

    def _sync(self) -> None:
        """Before anything that writes directly: the pipelined entries come first."""
        self._check_fed()
        if self._queue:
            self._retire(-1)

    def _cancel_pipeline(self) -> None:
        """abort(): let running encodes end (they use the fed buffers), drop the rest."""
        for task, _, _ in self._queue:
            if task is not None and not isinstance(task, Ready):
                task.cancel()
                if not task.cancelled():
                    try:
                        task.result()
                    except Exception:  # noqa: BLE001, S110 - aborting anyway
                        pass
        self._queue.clear()
        self._inflight = 0
        self._cur = None
