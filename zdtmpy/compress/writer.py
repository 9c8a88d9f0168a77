"""PagemapWriter: stream pagemap entries and their payload into a pagemap + pages file pair.

Files are written under temporary names in the target directory and renamed into place by
close(); abort() removes them. Memory stays bounded: payload is processed chunk by chunk,
by the threads of pipeline.pool() (lz4 releases the GIL), at most a few chunks in flight.

add() returns once its entry is written; begin() + feed() pipeline entries instead (the
page server; compress_dir through begin_source): chunks are encoded as they are fed and
written in order behind the caller.

The pages file is written with pwritev at explicit offsets. Runs of zero bytes that need not
be stored as data (zero pages when decompressing, all-zero chunks, alignment padding) are
left as holes: the file reads back the same bytes, and is sparse.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ..codec import OFF, Compression
from ..codec.algorithm import Buffer, Piece
from ..codec.blocks import zeros
from ..codec.coding import codec_for, decode_block
from ..errors import ImageError
from ..images import messages
from ..images.framing import PAGEMAP_MAGIC, encode_entry, encode_image
from ..images.messages import Message
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
from .pagesout import WriteBehind
from .pipeline import (
    Buf,
    chunk_size,
    ordered_map,
    pwrite_all,
    rechunk,
)
from .source import EntrySource
from .writerfeed import PendingEntry, PipelinedEntries
from .writerkeep import KeptPages
from .writersource import EncodedChunk, SourceEntries

_INPUT_FLAGS = PE_PARENT | PE_LAZY | PE_PRESENT
_META_FIELDS = ("compressed_size", "total_compressed_size", "region_pages")


class PagemapWriter(PipelinedEntries, SourceEntries, KeptPages):
    """Writes pagemap-<...>.img and pages-<pages_id>.img in `dirpath` following `spec`."""

    def __init__(self, dirpath: str | os.PathLike[str], pagemap_name: str = "pagemap-42.img",
                 pages_id: int = 1, spec: Compression | None = None,
                 head_template: Message | None = None) -> None:
        self.dir = Path(dirpath)
        self.spec: Compression = spec or OFF
        self.codec = codec_for(self.spec)
        self.pagemap_name = pagemap_name
        self.pages_name = f"pages-{pages_id}.img"
        self._where_prefix = f"{self.dir / pagemap_name}: entry "   # per entry: no Path ops
        self._tmp_pm = self.dir / f".{pagemap_name}.part"
        self._tmp_pages = self.dir / f".{self.pages_name}.part"
        self._pm: BinaryIO | None = None
        self._pages: BinaryIO | None = None
        self._state = "open"
        self._pos = 0            # size of the pages file so far (data and holes)
        self._end = 0            # end of the last data actually written (a hole may follow)
        self._prev_end: int | None = None    # end of the previous entry: entries must be sorted
        self.entries = 0         # entries written to the pagemap
        self._begun = 0          # entries accepted (begin() runs ahead of the files)
        self._init_pipeline()
        self._init_kept()
        try:
            # both stay open across add() calls; close()/abort() release them
            self._pm = open(self._tmp_pm, "xb")  # noqa: SIM115
            self._pages = open(self._tmp_pages, "xb", buffering=0)  # noqa: SIM115
            self._fd = self._pages.fileno()
            self._behind = WriteBehind(self._fd)   # the disk's work, in the background
        except OSError as exc:
            self.abort()
            raise ImageError(f"{self.dir}: cannot create {pagemap_name}: {exc.strerror}") \
                from None
        head = messages.PagemapHead()
        if head_template is not None:
            head.CopyFrom(head_template)  # keeps unknown fields of the original head
        head.pages_id = pages_id
        self._pm_write(encode_image(PAGEMAP_MAGIC, [head]))

    def __enter__(self) -> PagemapWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- public ------------------------------------------------------------------------

    def add(self, vaddr: int, nr_pages: int, flags: int, data: Buf | Iterable[Buf] = b"",
            template: Message | None = None) -> None:
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
            zero: bytes | None = None
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

    def add_compressed(self, vaddr: int, nr_pages: int, flags: int, sizes: Iterable[int],
                       blob: Buf) -> None:
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
        pages: list[bytes] = []
        pos = 0
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

    def close(self) -> None:
        """Flush, fsync and rename both files into place (pages first, then the pagemap)."""
        if self._state != "open":
            raise ImageError(f"{self.dir}: PagemapWriter for {self.pagemap_name} is "
                             f"{self._state}")
        self._sync()
        try:
            self._behind.finish()   # the background flush's error, if any, is this file's
            kept = self._close_kept()   # the source pages file stays: no pages file here
            if self._end < self._pos and not kept:  # the file ends with a hole
                os.ftruncate(self._fd, self._pos)
            for f in (self._pages, self._pm):
                assert f is not None  # both open while the state is "open"
                f.flush()
                if not (kept and f is self._pages):
                    os.fsync(f.fileno())
                f.close()
            if kept:
                os.unlink(self._tmp_pages)
            else:
                os.rename(self._tmp_pages, self.dir / self.pages_name)
            os.rename(self._tmp_pm, self.dir / self.pagemap_name)
            fsync_dir(self.dir)
        except OSError as exc:
            self.abort()
            raise ImageError(f"{self.dir}: cannot install {self.pagemap_name}: "
                             f"{exc.strerror}") from None
        self._state = "closed"

    def abort(self) -> None:
        """Remove everything written so far (no-op after a successful close)."""
        if self._state == "closed":
            return
        self._cancel_pipeline()
        behind = getattr(self, "_behind", None)   # None: the files could not be created
        if behind is not None:
            behind.cancel()   # a background flush may still use the pages file's fd
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
    def payload_size(self) -> int:
        return self._pos

    # -- internals ---------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self._where_prefix}{self._begun}"

    def _begin(self, vaddr: int, nr_pages: int, flags: int,
               template: Message | None) -> Message:
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

    def _finish(self, msg: Message, flags: int, template: Message | None) -> None:
        # keep a template's spelling of the flags (e.g. legacy: none) when it means the same
        if template is None or entry_flags(msg) != flags:
            msg.flags = flags
            if msg.HasField("in_parent") and not flags & PE_PARENT:
                msg.ClearField("in_parent")
        self._pm_write(encode_entry(msg))
        self.entries += 1

    def _pm_write(self, data: bytes) -> None:
        assert self._pm is not None  # opened in __init__ before any write
        try:
            self._pm.write(data)
        except OSError as exc:  # e.g. ENOSPC: the user must see this, naming the file
            raise ImageError(f"{self._tmp_pm}: write failed: {exc.strerror}") from None

    def _write(self, data: Buf) -> None:
        self._write_parts([data])

    def _write_parts(self, parts: Sequence[Buffer]) -> None:
        self._before_write()
        n = pwrite_all(self._fd, parts, self._pos, str(self._tmp_pages))
        if n:
            self._pos += n
            self._end = self._pos
            try:
                self._behind.wrote(self._end)   # close() then has less to flush
            except OSError as exc:   # a background flush failed
                raise ImageError(f"{self._tmp_pages}: write failed: {exc.strerror}") \
                    from None

    def _hole(self, n: int) -> None:
        """n zero bytes, not written: the file gets a hole there (or is extended at close)."""
        if n:
            self._before_write()
        self._pos += n

    def _write_pieces(self, pieces: Sequence[Piece]) -> None:
        """Pieces as from codec.decode_parts: ints are zero runs (holes), the rest data."""
        run: list[Buffer] = []
        for p in pieces:
            if isinstance(p, int):
                if run:
                    self._write_parts(run)
                    run = []
                self._hole(p)
            else:
                run.append(p)
        if run:
            self._write_parts(run)

    def _store_blocks(self, msg: Message, flags: int, nr_pages: int,
                      encoded: Iterable[EncodedChunk], template: Message | None) -> None:
        """Write encoded (sizes, parts, done) chunks of one entry applying the alignment
        rule; done (or None) is called once the parts are written."""
        ent = PendingEntry(msg, flags, nr_pages, template, None)
        for csizes, parts, done in encoded:
            self._store_chunk(ent, csizes, parts)
            if done is not None:
                done()
        self._end_entry(ent)

    def _store_chunk(self, ent: PendingEntry, csizes: list[int],
                     parts: Sequence[Buffer], same_at: int | None = None) -> None:
        """The next encoded chunk of `ent`: the first stored block decides the alignment.
        same_at: where in the source pages file the parts are, when they are its bytes
        unchanged (every block raw; see KeptPages)."""
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
        if parts and not self._holding(sum(csizes), same_at):
            self._write_parts(parts)

    def _end_entry(self, ent: PendingEntry) -> None:
        """Every chunk of `ent` is written: its pagemap entry follows."""
        msg, total = ent.msg, sum(ent.sizes)
        if ent.flags & PE_PRESENT and self.spec.enabled and \
                total != ent.nr_pages * PAGE_SIZE:  # all-raw entries keep the plain layout
            msg.compressed_size.extend(ent.sizes)
            msg.total_compressed_size = total
            if self.spec.is_region:
                msg.region_pages = self.spec.block_pages
        self._finish(msg, ent.flags, ent.template)

