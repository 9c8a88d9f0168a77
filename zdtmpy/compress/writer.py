"""PagemapWriter: stream pagemap entries and their payload into a pagemap + pages file pair.

Files are written under temporary names in the target directory and renamed into place by
close(); abort() removes them. Memory stays bounded: payload is processed chunk by chunk,
by the threads of pipeline.pool() (lz4 releases the GIL), at most a few chunks in flight.

add() returns once its entry is written; begin() + feed() pipeline entries instead (the
page server): chunks are encoded as they are fed and written in order behind the caller.

The pages file is written with pwritev at explicit offsets. Runs of zero bytes that need not
be stored as data (zero blocks when decompressing, all-zero chunks, alignment padding) are
left as holes: the file reads back the same bytes, and is sparse.
"""

import collections
import ctypes
import os
import sys
from pathlib import Path

from ..codec import OFF, Compression
from ..codec.blocks import zeros
from ..codec.coding import codec_for, decode_block
from ..errors import ImageError
from ..images import messages
from ..images.framing import PAGEMAP_MAGIC, encode_entry, encode_image
from ..images.pagemap import (
    PAGE_SIZE,
    PE_LAZY,
    PE_PARENT,
    PE_PAYLOAD_ALIGNED,
    PE_PRESENT,
    entry_flags,
    set_entry_nr_pages,
)
from .install import fsync_dir
from .pipeline import (
    chunk_size,
    ordered_map,
    pwrite_all,
    rechunk,
    shared_pool,
    workers,
)
from .pipeline import pool as worker_pool
from .source import EntrySource

_INPUT_FLAGS = PE_PARENT | PE_LAZY | PE_PRESENT
_META_FIELDS = ("compressed_size", "total_compressed_size", "region_pages")


WRITE_BEHIND = 8 << 20   # start the writeback of every this many bytes written (async)


def _sync_file_range():
    """libc sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda fd, off, n: fn(fd, off, n, 2)  # SYNC_FILE_RANGE_WRITE


_start_writeback = _sync_file_range() if sys.platform.startswith("linux") else None


def _pool(size):
    return shared_pool("writer", size, keep=8)


class _Entry:
    """An entry on its way to the files: its message and what its stored blocks decided."""

    __slots__ = ("msg", "flags", "nr_pages", "template", "sizes", "first_stored", "fed",
                 "where")

    def __init__(self, msg, flags, nr_pages, template, where):
        self.msg, self.flags, self.nr_pages, self.template = msg, flags, nr_pages, template
        self.sizes = []
        self.first_stored = None
        self.fed = 0
        self.where = where


class _Ready:
    """A result computed in the caller's thread, looking like a finished future."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def done(self):
        return True

    def result(self):
        return self.value


class PagemapWriter:
    """Writes pagemap-<...>.img and pages-<pages_id>.img in `dirpath` following `spec`."""

    def __init__(self, dirpath, pagemap_name="pagemap-42.img", pages_id=1, spec=None,
                 head_template=None):
        self.dir = Path(dirpath)
        self.spec: Compression = spec or OFF
        self.codec = codec_for(self.spec)
        self.pagemap_name = pagemap_name
        self.pages_name = f"pages-{pages_id}.img"
        self._tmp_pm = self.dir / f".{pagemap_name}.part"
        self._tmp_pages = self.dir / f".{self.pages_name}.part"
        self._pm = self._pages = None
        self._state = "open"
        self._pos = 0            # size of the pages file so far (data and holes)
        self._end = 0            # end of the last data actually written (a hole may follow)
        self._synced = 0         # writeback started up to here (see WRITE_BEHIND)
        self._prev_end = None    # end of the previous entry: entries must be sorted
        self.entries = 0         # entries written to the pagemap
        self._begun = 0          # entries accepted (begin() runs ahead of the files)
        self._queue = collections.deque()   # (future or None, _Entry, release) in order
        self._inflight = 0       # chunks in that queue
        self._cur = None         # the begun PE_PRESENT entry still being fed
        try:
            # both stay open across add() calls; close()/abort() release them
            self._pm = open(self._tmp_pm, "xb")  # noqa: SIM115
            self._pages = open(self._tmp_pages, "xb", buffering=0)  # noqa: SIM115
            self._fd = self._pages.fileno()
        except OSError as exc:
            self.abort()
            raise ImageError(f"{self.dir}: cannot create {pagemap_name}: {exc.strerror}") \
                from None
        head = messages.PagemapHead()
        if head_template is not None:
            head.CopyFrom(head_template)  # keeps unknown fields of the original head
        head.pages_id = pages_id
        self._pm_write(encode_image(PAGEMAP_MAGIC, [head]))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- public ------------------------------------------------------------------------

    def add(self, vaddr, nr_pages, flags, data=b"", template=None):
        """Add one entry. data (PE_PRESENT only): bytes-like of nr_pages pages or an iterable
        of bytes-like pieces. template: a pagemap_entry whose other (incl. unknown) fields
        are kept. PE_PAYLOAD_ALIGNED in flags is ignored: the writer decides it."""
        self._sync()
        where = self._where()
        msg = self._begin(vaddr, nr_pages, flags, template)
        flags &= ~PE_PAYLOAD_ALIGNED
        if not flags & PE_PRESENT:
            if data:
                raise ImageError(f"{where}: payload given for an entry without PE_PRESENT")
            return self._finish(msg, flags, template)
        total = nr_pages * PAGE_SIZE
        if isinstance(data, EntrySource) and len(data) == total:
            if not self.spec.enabled:
                return self._copy_source(msg, flags, data, template)
            if not data.compressed:
                return self._encode_source(msg, flags, nr_pages, data, template)
        if not self.spec.enabled:
            zero = None
            for chunk in rechunk(data, chunk_size(PAGE_SIZE), total, where):
                if zero is None or len(zero) != len(chunk):
                    zero = zeros(len(chunk))
                if zero.startswith(chunk):
                    self._hole(len(chunk))
                else:
                    self._write(chunk)
            return self._finish(msg, flags, template)
        block_bytes = self.spec.block_pages * PAGE_SIZE
        acc = self.spec.acceleration
        chunks = rechunk(data, chunk_size(block_bytes), total, where)
        encode = self.codec.encode_parts
        encoded = ordered_map(lambda c: (*encode(c, block_bytes, acc), None), chunks)
        return self._store_blocks(msg, flags, nr_pages, encoded, template)

    def add_compressed(self, vaddr, nr_pages, flags, sizes, blob):
        """Add a PE_PRESENT entry given as per-page blocks (as a compressing CRIU sends them:
        sizes[i] is 0, PAGE_SIZE or an LZ4 block length; blob holds the blocks back to back).
        Every block is checked; the pages are re-encoded unless the spec is per-page."""
        self._sync()
        where = self._where()
        sizes = list(sizes)
        if len(sizes) != nr_pages:
            raise ImageError(f"{where}: {len(sizes)} block sizes for {nr_pages} pages")
        if any(s > PAGE_SIZE for s in sizes):
            raise ImageError(f"{where}: a block size is larger than a page")
        if sum(sizes) != len(blob):
            raise ImageError(f"{where}: block sizes sum to {sum(sizes)}, got {len(blob)} bytes")
        if not flags & PE_PRESENT:
            raise ImageError(f"{where}: compressed payload for an entry without PE_PRESENT")
        mv = memoryview(blob)
        pages, pos = [], 0
        for i, size in enumerate(sizes):
            try:
                pages.append(decode_block(mv[pos:pos + size], size, PAGE_SIZE))
            except ImageError as exc:
                raise ImageError(f"{where}: page {i}: {exc}") from None
            pos += size
        if self.spec.layout != "page":
            return self.add(vaddr, nr_pages, flags, pages)
        msg = self._begin(vaddr, nr_pages, flags, None)
        return self._store_blocks(msg, flags & ~PE_PAYLOAD_ALIGNED, nr_pages,
                                  [(sizes, [bytes(blob)], None)], None)

    def close(self):
        """Flush, fsync and rename both files into place (pages first, then the pagemap)."""
        if self._state != "open":
            raise ImageError(f"{self.dir}: PagemapWriter for {self.pagemap_name} is "
                             f"{self._state}")
        self._sync()
        try:
            if self._end < self._pos:  # the file ends with a hole
                os.ftruncate(self._fd, self._pos)
            for f in (self._pages, self._pm):
                f.flush()
                os.fsync(f.fileno())
                f.close()
            os.rename(self._tmp_pages, self.dir / self.pages_name)
            os.rename(self._tmp_pm, self.dir / self.pagemap_name)
            fsync_dir(self.dir)
        except OSError as exc:
            self.abort()
            raise ImageError(f"{self.dir}: cannot install {self.pagemap_name}: "
                             f"{exc.strerror}") from None
        self._state = "closed"

    def abort(self):
        """Remove everything written so far (no-op after a successful close)."""
        if self._state == "closed":
            return
        self._cancel_pipeline()
        for f in (self._pm, self._pages):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass  # flushing what we discard (e.g. ENOSPC again): the first error counts
        for p in (self._tmp_pm, self._tmp_pages):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        self._state = "aborted"

    @property
    def payload_size(self):
        return self._pos

    # -- internals ---------------------------------------------------------------------

    def _where(self):
        return f"{self.dir / self.pagemap_name}: entry {self._begun}"

    def _begin(self, vaddr, nr_pages, flags, template):
        where = self._where()
        if self._state != "open":
            raise ImageError(f"{where}: writer is {self._state}")
        if nr_pages <= 0:
            raise ImageError(f"{where}: nr_pages must be positive, got {nr_pages}")
        if vaddr % PAGE_SIZE:
            raise ImageError(f"{where}: vaddr {vaddr:#x} is not page aligned")
        if flags & ~(_INPUT_FLAGS | PE_PAYLOAD_ALIGNED):
            raise ImageError(f"{where}: unknown flags {flags:#x}")
        if flags & PE_PRESENT and flags & PE_PARENT:
            raise ImageError(f"{where}: PE_PRESENT and PE_PARENT together")
        if self._prev_end is not None and vaddr < self._prev_end:
            raise ImageError(f"{where}: vaddr {vaddr:#x} overlaps or precedes the previous "
                             f"entry (ends at {self._prev_end:#x})")
        self._prev_end = vaddr + nr_pages * PAGE_SIZE
        self._begun += 1
        msg = messages.PagemapEntry()
        if template is not None:
            msg.CopyFrom(template)
            for name in _META_FIELDS:
                msg.ClearField(name)
        msg.vaddr = vaddr
        set_entry_nr_pages(msg, nr_pages)
        return msg

    def _finish(self, msg, flags, template):
        # keep a template's spelling of the flags (e.g. legacy: none) when it means the same
        if template is None or entry_flags(msg) != flags:
            msg.flags = flags
            if msg.HasField("in_parent") and not flags & PE_PARENT:
                msg.ClearField("in_parent")
        self._pm_write(encode_entry(msg))
        self.entries += 1

    def _pm_write(self, data):
        try:
            self._pm.write(data)
        except OSError as exc:  # e.g. ENOSPC: the user must see this, naming the file
            raise ImageError(f"{self._tmp_pm}: write failed: {exc.strerror}") from None

    def _write(self, data):
        self._write_parts([data])

    def _write_parts(self, parts):
        n = pwrite_all(self._fd, parts, self._pos, self._tmp_pages)
        if n:
            self._pos += n
            self._end = self._pos
            if self._end - self._synced >= WRITE_BEHIND and _start_writeback is not None:
                # let the disk work while we compute: close() then has less to fsync
                _start_writeback(self._fd, self._synced, self._end - self._synced)
                self._synced = self._end

    def _hole(self, n):
        """n zero bytes, not written: the file gets a hole there (or is extended at close)."""
        self._pos += n

    def _write_pieces(self, pieces):
        """Pieces as from codec.decode_parts: ints are zero runs (holes), the rest data."""
        run = []
        for p in pieces:
            if type(p) is int:
                if run:
                    self._write_parts(run)
                    run = []
                self._hole(p)
            else:
                run.append(p)
        if run:
            self._write_parts(run)

    def _copy_source(self, msg, flags, src, template):
        """Spec "off": the decoded payload of an EntrySource. The decoded size of every
        task is known in advance, so each worker reads, decodes and writes (pwritev at its
        own offset, zero runs left as holes) one task: no ordering, no copy through here."""
        e = src.e
        block_bytes = e.block_pages * PAGE_SIZE if src.compressed else PAGE_SIZE
        chunk = chunk_size(block_bytes)
        pool = _pool(chunk)
        base = self._pos
        fd, what = self._fd, self._tmp_pages

        def work(task):
            start, n, _, slen, b0, b1 = task
            buf, stored = src.read(task, pool)
            out = None
            try:
                if not src.compressed:
                    pieces = [n] if zeros(n).startswith(stored) else [stored]
                else:
                    out = pool.get()
                    if len(out) < n:
                        out = bytearray(n)
                    try:
                        pieces = self.codec.decode_into(buf, slen, e.sizes[b0:b1],
                                                        block_bytes, n, out, b0)
                    except ImageError as exc:
                        raise ImageError(f"{src.pm.path}: entry {e.index} {exc}") from None
                pos, end, run = base + start, 0, []
                for p in pieces:  # write runs of data, skip zero runs (holes)
                    if type(p) is int:
                        if run:
                            pos += pwrite_all(fd, run, pos, what)
                            end, run = pos, []
                        pos += p
                    else:
                        run.append(p)
                if run:
                    pos += pwrite_all(fd, run, pos, what)
                    end = pos
                pieces = run = stored = None
            finally:
                pool.put(buf)
                if out is not None:
                    pool.put(out)
            return start + n, end, n

        for done, end, n in ordered_map(work, src.tasks(chunk)):
            if end:
                self._end = max(self._end, end)
            self._pos = base + done
            if self._end - self._synced >= WRITE_BEHIND and _start_writeback is not None:
                _start_writeback(self._fd, self._synced, self._end - self._synced)
                self._synced = self._end
            if src.progress:
                src.progress.update(n)
        return self._finish(msg, flags, template)

    def _encode_source(self, msg, flags, nr_pages, src, template):
        """A compressed spec over an uncompressed EntrySource: workers read and encode."""
        block_bytes = self.spec.block_pages * PAGE_SIZE
        acc = self.spec.acceleration
        chunk = chunk_size(block_bytes)
        pool = _pool(chunk)
        outpool = _pool(chunk + block_bytes + (block_bytes >> 7) + 64)  # + LZ4 bound slack
        progress = src.progress

        def work(task):
            buf, stored = src.read(task, pool)
            out = outpool.get()
            sizes, parts = self.codec.encode_into(buf, len(stored), out, block_bytes, acc)

            def done():
                pool.put(buf)
                outpool.put(out)
                if progress:
                    progress.update(task[1])
            return sizes, parts, done

        return self._store_blocks(msg, flags, nr_pages, ordered_map(work, src.tasks(chunk)),
                                  template)

    def _store_blocks(self, msg, flags, nr_pages, encoded, template):
        """Write encoded (sizes, parts, done) chunks of one entry applying the alignment
        rule; done (or None) is called once the parts are written."""
        ent = _Entry(msg, flags, nr_pages, template, None)
        for csizes, parts, done in encoded:
            self._store_chunk(ent, csizes, parts)
            if done is not None:
                done()
        self._end_entry(ent)

    def _store_chunk(self, ent, csizes, parts):
        """The next encoded chunk of `ent`: the first stored block decides the alignment."""
        if ent.first_stored is None:
            block_pages = self.spec.block_pages
            for i, size in enumerate(csizes):
                if size:
                    first = ent.first_stored = len(ent.sizes) + i
                    block = min(block_pages, ent.nr_pages - first * block_pages)
                    if size == block * PAGE_SIZE:  # raw first block: keep it page aligned
                        self._hole(-self._pos % PAGE_SIZE)   # zero padding
                        ent.flags |= PE_PAYLOAD_ALIGNED
                    break
        ent.sizes.extend(csizes)
        if parts:
            self._write_parts(parts)

    def _end_entry(self, ent):
        """Every chunk of `ent` is written: its pagemap entry follows."""
        msg, total = ent.msg, sum(ent.sizes)
        if ent.flags & PE_PRESENT and self.spec.enabled and \
                total != ent.nr_pages * PAGE_SIZE:  # all-raw entries keep the plain layout
            msg.compressed_size.extend(ent.sizes)
            msg.total_compressed_size = total
            if self.spec.is_region:
                msg.region_pages = self.spec.block_pages
        self._finish(msg, ent.flags, ent.template)

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
        ent = _Entry(msg, flags & ~PE_PAYLOAD_ALIGNED, nr_pages, template, where)
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
            task = _Ready((None, [n] if zeros(n).startswith(view) else [view], None))
        elif workers() == 1:
            task = _Ready(self._encode_fed(buf, n))
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
        outpool = _pool(chunk_size(block_bytes) + slack)
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
            if task is not None and not isinstance(task, _Ready):
                task.cancel()
                if not task.cancelled():
                    try:
                        task.result()
                    except Exception:  # noqa: BLE001, S110 - aborting anyway
                        pass
        self._queue.clear()
        self._inflight = 0
        self._cur = None
