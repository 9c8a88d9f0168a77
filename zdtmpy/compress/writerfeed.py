"""PagemapWriter's pipelined entries: begin() + feed() queue the work, the workers encode
chunks as they are fed, and the chunks are written in order behind the caller."""

import collections

from ..codec.blocks import zeros
from ..errors import ImageError
from ..images.pagemap import PAGE_SIZE, PE_PAYLOAD_ALIGNED, PE_PRESENT
from .pagesout import writer_pool
from .pipeline import chunk_size, workers
from .pipeline import pool as worker_pool


class PendingEntry:
    """An entry on its way to the files: its message and what its stored blocks decided."""

    __slots__ = ("msg", "flags", "nr_pages", "template", "sizes", "first_stored", "fed",
                 "where")

    def __init__(self, msg, flags, nr_pages, template, where):
        self.msg, self.flags, self.nr_pages, self.template = msg, flags, nr_pages, template
        self.sizes = []
        self.first_stored = None
        self.fed = 0
        self.where = where


class Ready:
    """A result computed in the caller's thread, looking like a finished future."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def done(self):
        return True

    def result(self):
        return self.value


class PipelinedEntries:
    """Mixed into PagemapWriter (whose state and _store_chunk/_end_entry it uses)."""

    def _init_pipeline(self):
        self._queue = collections.deque()   # (future or None, PendingEntry, release) in order
        self._inflight = 0       # chunks in that queue
        self._cur = None         # the begun PE_PRESENT entry still being fed

    # -- pipelined entries -------------------------------------------------------------
    #
    # add() returns once its entry is in the files, which leaves the worker threads idle
    # between entries when entries arrive one by one (a page server gets ~3 MiB at a time).
    # begin()/feed() queue the work instead: chunks are encoded by the workers as they are
    # fed and written here in order (an entry's offset depends on every earlier entry's
    # stored size), whenever the caller comes back, so entry k+1 is encoded while entry k
    # is still being written.

    def begin(self, vaddr, nr_pages, flags, template=None):
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
            self._retire(self._window())

    def feed(self, buf, n, release=None):
        """The next n payload bytes of the begun entry: the first n bytes of the bytearray
        `buf`, a whole number of blocks unless they end the entry. buf must stay unchanged
        until release(buf) is called (from this thread, once its bytes are written)."""
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
        if not self.spec.enabled:
            view = memoryview(buf)[:n]
            task = Ready((None, [n] if zeros(n).startswith(view) else [view], None))
        elif workers() == 1:
            task = Ready(self._encode_fed(buf, n))
        else:
            task = worker_pool().submit(self._encode_fed, buf, n)
        self._queue.append((task, ent, (buf, release)))
        self._inflight += 1
        if ent.fed == total:
            self._cur = None
            self._queue.append((None, ent, None))
        self._retire(self._window())

    def drain(self):
        """Wait until everything begun so far is written (files stay open)."""
        self._retire(-1)

    @staticmethod
    def _window():
        return 2 * workers() + 2   # chunks in flight: bounded memory, busy workers

    def _encode_fed(self, buf, n):
        block_bytes = self.spec.block_pages * PAGE_SIZE
        slack = block_bytes + (block_bytes >> 7) + 64   # the LZ4 bound of the last block
        outpool = writer_pool(chunk_size(block_bytes) + slack)
        out = outpool.get() if n <= chunk_size(block_bytes) else bytearray(n + slack)
        sizes, parts = self.codec.encode_into(buf, n, out, block_bytes, self.spec.acceleration)
        return sizes, parts, (outpool, out)

    def _retire(self, limit):
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
                sizes, parts, out = task.result()
            except ImageError:
                self._state = "failed"
                raise
            except Exception as exc:
                self._state = "failed"
                raise ImageError(f"{ent.where}: encoding failed: {exc!r}") from None
            if sizes is None:
                self._write_pieces(parts)
            else:
                self._store_chunk(ent, sizes, parts)
            parts = None
            if out is not None:
                out[0].put(out[1])
            buf, release = held
            if release is not None:
                release(buf)

    def _check_fed(self):
        if self._cur is not None:
            ent = self._cur
            raise ImageError(f"{ent.where}: only {ent.fed} of {ent.nr_pages * PAGE_SIZE} "
                             "payload bytes were fed")

    def _sync(self):
        """Before anything that writes directly: the pipelined entries come first."""
        self._check_fed()
        if self._queue:
            self._retire(-1)

    def _cancel_pipeline(self):
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
