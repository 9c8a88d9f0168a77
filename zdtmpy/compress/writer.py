"""PagemapWriter: stream pagemap entries and their payload into a pagemap + pages file pair.

Files are written under temporary names in the target directory and renamed into place by
close(); abort() removes them. Memory stays bounded: payload is processed chunk by chunk.
"""

import os
from pathlib import Path

from ..errors import ImageError
from ..images import messages
from ..images.blocks import decode_block, zeros
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
from .codec import CompressionSpec, encode_chunk
from .pipeline import chunk_size, ordered_map, rechunk

_INPUT_FLAGS = PE_PARENT | PE_LAZY | PE_PRESENT
_META_FIELDS = ("compressed_size", "total_compressed_size", "region_pages")


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PagemapWriter:
    """Writes pagemap-<...>.img and pages-<pages_id>.img in `dirpath` following `spec`."""

    def __init__(self, dirpath, pagemap_name="pagemap-42.img", pages_id=1, spec=None,
                 head_template=None):
        self.dir = Path(dirpath)
        self.spec = spec or CompressionSpec("off")
        self.pagemap_name = pagemap_name
        self.pages_name = f"pages-{pages_id}.img"
        self._tmp_pm = self.dir / f".{pagemap_name}.part"
        self._tmp_pages = self.dir / f".{self.pages_name}.part"
        self._pm = self._pages = None
        self._state = "open"
        self._pos = 0            # bytes written to the pages file so far
        self._prev_end = None    # end of the previous entry: entries must be sorted
        self.entries = 0
        try:
            # both stay open across add() calls; close()/abort() release them
            self._pm = open(self._tmp_pm, "xb")  # noqa: SIM115
            self._pages = open(self._tmp_pages, "xb")  # noqa: SIM115
        except OSError as exc:
            self.abort()
            raise ImageError(f"{self.dir}: cannot create {pagemap_name}: {exc.strerror}") \
                from None
        head = messages.PagemapHead()
        if head_template is not None:
            head.CopyFrom(head_template)  # keeps unknown fields of the original head
        head.pages_id = pages_id
        self._pm.write(encode_image(PAGEMAP_MAGIC, [head]))

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
        msg = self._begin(vaddr, nr_pages, flags, template)
        flags &= ~PE_PAYLOAD_ALIGNED
        if not flags & PE_PRESENT:
            if data:
                raise ImageError(f"{self._where()}: payload given for an entry without "
                                 "PE_PRESENT")
            return self._finish(msg, flags, template)
        total = nr_pages * PAGE_SIZE
        if self.spec.mode == "off":
            for chunk in rechunk(data, chunk_size(PAGE_SIZE), total, self._where()):
                self._write(chunk)
            return self._finish(msg, flags, template)
        block_bytes = self.spec.block_pages * PAGE_SIZE
        acc = self.spec.acceleration
        chunks = rechunk(data, chunk_size(block_bytes), total, self._where())
        encoded = ordered_map(lambda c: encode_chunk(c, block_bytes, acc), chunks)
        return self._store_blocks(msg, flags, nr_pages, encoded, template)

    def add_compressed(self, vaddr, nr_pages, flags, sizes, blob):
        """Add a PE_PRESENT entry given as per-page blocks (as a compressing CRIU sends them:
        sizes[i] is 0, PAGE_SIZE or an LZ4 block length; blob holds the blocks back to back).
        Every block is checked; the pages are re-encoded unless the spec is per-page."""
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
        if self.spec.mode != "page":
            return self.add(vaddr, nr_pages, flags, pages)
        msg = self._begin(vaddr, nr_pages, flags, None)
        return self._store_blocks(msg, flags & ~PE_PAYLOAD_ALIGNED, nr_pages,
                                  [(sizes, bytes(blob))], None)

    def close(self):
        """Flush, fsync and rename both files into place (pages first, then the pagemap)."""
        if self._state != "open":
            raise ImageError(f"{self.dir}: PagemapWriter for {self.pagemap_name} is "
                             f"{self._state}")
        try:
            for f in (self._pages, self._pm):
                f.flush()
                os.fsync(f.fileno())
                f.close()
            os.rename(self._tmp_pages, self.dir / self.pages_name)
            os.rename(self._tmp_pm, self.dir / self.pagemap_name)
            _fsync_dir(self.dir)
        except OSError as exc:
            self.abort()
            raise ImageError(f"{self.dir}: cannot install {self.pagemap_name}: "
                             f"{exc.strerror}") from None
        self._state = "closed"

    def abort(self):
        """Remove everything written so far (no-op after a successful close)."""
        if self._state == "closed":
            return
        for f in (self._pm, self._pages):
            if f is not None and not f.closed:
                f.close()
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
        return f"{self.dir / self.pagemap_name}: entry {self.entries}"

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
        self._pm.write(encode_entry(msg))
        self.entries += 1

    def _write(self, data):
        self._pages.write(data)
        self._pos += len(data)

    def _store_blocks(self, msg, flags, nr_pages, encoded, template):
        """Write encoded (sizes, payload) chunks of one entry applying the alignment rule."""
        block_pages = self.spec.block_pages
        sizes = []
        first_stored = None
        for csizes, payload in encoded:
            if first_stored is None:
                for i, size in enumerate(csizes):
                    if size:
                        first_stored = len(sizes) + i
                        block = min(block_pages, nr_pages - first_stored * block_pages)
                        if size == block * PAGE_SIZE:  # raw first block: keep it page aligned
                            self._write(zeros(-self._pos % PAGE_SIZE))
                            flags |= PE_PAYLOAD_ALIGNED
                        break
            sizes.extend(csizes)
            if payload:
                self._write(payload)
        total = sum(sizes)
        if total != nr_pages * PAGE_SIZE:  # all-raw entries keep the plain layout
            msg.compressed_size.extend(sizes)
            msg.total_compressed_size = total
            if self.spec.mode == "region":
                msg.region_pages = block_pages
        return self._finish(msg, flags, template)
