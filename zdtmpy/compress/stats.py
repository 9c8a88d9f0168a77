"""Counts of zero / raw / LZ4 blocks and bytes per pagemap (metadata only, no payload reads)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..images.pagemap import PAGE_SIZE, Pagemap


@dataclass
class PagemapStats:
    pages: int = 0          # pages described (any flags)
    present_pages: int = 0  # pages stored in this layer
    zero: int = 0           # zero blocks
    raw: int = 0            # raw blocks (plain entries count each page as one raw block)
    lz4: int = 0            # LZ4 blocks
    before: int = 0         # decoded bytes of present pages
    after: int = 0          # payload bytes in the pages file (incl. alignment padding)


def pagemap_stats(pm: Pagemap) -> PagemapStats:
    s = PagemapStats(after=pm.payload_size)
    for e in pm.entries:
        s.pages += e.nr_pages
        if not e.present:
            continue
        s.present_pages += e.nr_pages
        s.before += e.nr_pages * PAGE_SIZE
        if not e.compressed:
            s.raw += e.nr_pages
            continue
        for i, size in enumerate(e.sizes or ()):
            if size == 0:
                s.zero += 1
            elif size == e.block_bytes(i):
                s.raw += 1
            else:
                s.lz4 += 1
    return s


def image_bytes(path: str | os.PathLike[str]) -> tuple[int, int, bool] | None:
    """(decoded bytes of present pages, stored payload bytes, compressed?) of one image set,
    summed over its pagemaps; None when it cannot be read (the checks report why)."""
    from ..errors import ZdtmError
    from ..images import ImageSet

    try:
        iset = ImageSet(path)
        pms = list(iset.pagemaps.values())
    except (ZdtmError, OSError):
        return None
    # pagemap_stats' two totals, without its per-block counts (every item reports these)
    before = sum(e.nr_pages for pm in pms for e in pm.entries if e.present) * PAGE_SIZE
    return before, sum(pm.payload_size for pm in pms), bool(iset.compress)
