"""Decoded payload of one pagemap entry, streamed chunk by chunk (any stored layout).

entry_chunks() yields independent bytes objects (callers may keep them). entry_source()
returns the same stream as an EntrySource, which PagemapWriter recognises: its workers
then read the pages file themselves into reused buffers (no per-chunk allocations, no
copies through the main thread).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..codec.algorithm import Piece
from ..codec.coding import decode_chunk, decode_parts
from ..errors import ImageError
from ..images.pagemap import PAGE_SIZE, Entry, Pagemap
from .pipeline import CHUNK_BYTES, BufferPool, ordered_map
from .progress import Progress

# (decoded start, decoded length, stored start, stored length, first block, last block + 1)
Task = tuple[int, int, int, int, int, int]


def _pread_exact(fd: int, n: int, offset: int, pm: Pagemap, e: Entry) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise ImageError(f"{pm.pages_path}: short read at offset {offset} for entry {e.index} "
                         f"of {pm.name} ({len(data)} of {n} bytes)")
    return data


def _preadinto_exact(fd: int, view: memoryview, offset: int, pm: Pagemap,
                     e: Entry) -> memoryview:
    """Fill the memoryview `view` from fd at offset (retrying short reads until EOF)."""
    n, want = 0, len(view)
    while n < want:
        got = os.preadv(fd, [view[n:]], offset + n)
        if got <= 0:
            raise ImageError(f"{pm.pages_path}: short read at offset {offset} for entry "
                             f"{e.index} of {pm.name} ({n} of {want} bytes)")
        n += got
    return view


def entry_chunks(fd: int, pm: Pagemap, e: Entry,
                 progress: Progress | None = None) -> Iterator[bytes]:
    """Yield the decoded bytes of present entry `e` of pagemap `pm` (pages file open as fd)."""
    assert e.offset is not None   # a present entry
    offset = e.offset
    if e.sizes is None:
        step = CHUNK_BYTES
        total = e.nr_pages * PAGE_SIZE
        for off in range(0, total, step):
            data = _pread_exact(fd, min(step, total - off), offset + off, pm, e)
            if progress:
                progress.update(len(data))
            yield data
        return
    block_bytes = e.block_pages * PAGE_SIZE
    per_group = max(1, CHUNK_BYTES // block_bytes)
    offs = e.block_offsets
    nblocks = e.nblocks
    total = e.nr_pages * PAGE_SIZE
    sizes = e.sizes

    def groups() -> Iterator[tuple[int, int, bytes]]:  # read here; decode in the pool
        for b0 in range(0, nblocks, per_group):
            b1 = min(nblocks, b0 + per_group)
            n = offs[b1] - offs[b0]
            buf = _pread_exact(fd, n, offset + offs[b0], pm, e) if n else b""
            yield b0, b1, buf

    def decode(group: tuple[int, int, bytes]) -> bytes:
        b0, b1, buf = group
        nbytes = min(total - b0 * block_bytes, (b1 - b0) * block_bytes)
        try:
            return decode_chunk(buf, sizes[b0:b1], block_bytes, nbytes, b0)
        except ImageError as exc:
            raise ImageError(f"{pm.path}: entry {e.index} {exc}") from None

    for data in ordered_map(decode, groups()):
        if progress:
            progress.update(len(data))
        yield data


class EntrySource:
    """The decoded payload of present entry `e` of `pm`, stored in the pages file open as
    `fd`. Iterating it is entry_chunks(); PagemapWriter uses tasks()/run() instead.

    A task covers a run of whole stored blocks of about `chunk` decoded bytes. run(task,
    pool) reads it into a buffer from `pool` and returns (buffer, pieces): the decoded
    bytes as in codec decode_parts (an int = that many zero bytes; bytes-like otherwise,
    possibly views into the buffer, which goes back to the pool once they are written).
    """

    def __init__(self, fd: int, pm: Pagemap, e: Entry,
                 progress: Progress | None = None) -> None:
        self.fd, self.pm, self.e, self.progress = fd, pm, e, progress
        self.nbytes = e.nr_pages * PAGE_SIZE

    def __iter__(self) -> Iterator[bytes]:
        return entry_chunks(self.fd, self.pm, self.e, self.progress)

    def __len__(self) -> int:
        return self.nbytes

    @property
    def compressed(self) -> bool:
        return self.e.compressed

    def tasks(self, chunk: int) -> Iterator[Task]:
        """(decoded start, decoded length, stored start, stored length, first block, last
        block + 1) per task, in order. chunk: wanted decoded bytes per task (a multiple of
        the block size for compressed entries)."""
        e = self.e
        assert e.offset is not None   # a present entry
        if not e.compressed:
            for off in range(0, self.nbytes, chunk):
                n = min(chunk, self.nbytes - off)
                yield off, n, e.offset + off, n, 0, 0
            return
        block_bytes = e.block_pages * PAGE_SIZE
        per_group = max(1, chunk // block_bytes)
        offs = e.block_offsets
        for b0 in range(0, e.nblocks, per_group):
            b1 = min(e.nblocks, b0 + per_group)
            start = b0 * block_bytes
            n = min(self.nbytes - start, (b1 - b0) * block_bytes)
            yield start, n, e.offset + offs[b0], offs[b1] - offs[b0], b0, b1

    def read(self, task: Task, pool: BufferPool) -> tuple[bytearray, memoryview]:
        """(buffer, view of the stored bytes of the task) read into a pooled buffer."""
        _, _, soff, slen, _, _ = task
        buf = pool.get()
        if len(buf) < slen:
            buf = bytearray(slen)
        view = memoryview(buf)[:slen]
        if slen:
            _preadinto_exact(self.fd, view, soff, self.pm, self.e)
        return buf, view

    def decode(self, task: Task, stored: memoryview) -> list[Piece]:
        """The decoded pieces of a task from its stored bytes (see codec decode_parts)."""
        _, n, _, _, b0, b1 = task
        e = self.e
        if e.sizes is None:
            return [stored]
        try:
            return decode_parts(stored, e.sizes[b0:b1], e.block_pages * PAGE_SIZE, n, b0)
        except ImageError as exc:
            raise ImageError(f"{self.pm.path}: entry {e.index} {exc}") from None


def entry_source(fd: int, pm: Pagemap, e: Entry,
                 progress: Progress | None = None) -> EntrySource:
    """An EntrySource for present entry `e` (iterable like entry_chunks)."""
    return EntrySource(fd, pm, e, progress)
