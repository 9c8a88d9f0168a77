"""Decoded payload of one pagemap entry, streamed chunk by chunk (any stored layout)."""

import os

from ..errors import ImageError
from ..images.pagemap import PAGE_SIZE
from .codec import decode_chunk
from .pipeline import CHUNK_BYTES, ordered_map


def _pread_exact(fd, n, offset, pm, e):
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise ImageError(f"{pm.pages_path}: short read at offset {offset} for entry {e.index} "
                         f"of {pm.name} ({len(data)} of {n} bytes)")
    return data


def entry_chunks(fd, pm, e, progress=None):
    """Yield the decoded bytes of present entry `e` of pagemap `pm` (pages file open as fd)."""
    if not e.compressed:
        step = CHUNK_BYTES
        total = e.nr_pages * PAGE_SIZE
        for off in range(0, total, step):
            data = _pread_exact(fd, min(step, total - off), e.offset + off, pm, e)
            if progress:
                progress.update(len(data))
            yield data
        return
    block_bytes = e.block_pages * PAGE_SIZE
    per_group = max(1, CHUNK_BYTES // block_bytes)
    offs = e.block_offsets
    nblocks = e.nblocks
    total = e.nr_pages * PAGE_SIZE

    def groups():  # read sequentially in this thread; decode in the pool
        for b0 in range(0, nblocks, per_group):
            b1 = min(nblocks, b0 + per_group)
            n = offs[b1] - offs[b0]
            buf = _pread_exact(fd, n, e.offset + offs[b0], pm, e) if n else b""
            yield b0, b1, buf

    def decode(group):
        b0, b1, buf = group
        nbytes = min(total - b0 * block_bytes, (b1 - b0) * block_bytes)
        try:
            return decode_chunk(buf, e.sizes[b0:b1], block_bytes, nbytes, b0)
        except ImageError as exc:
            raise ImageError(f"{pm.path}: entry {e.index} {exc}") from None

    for data in ordered_map(decode, groups()):
        if progress:
            progress.update(len(data))
        yield data
