"""What a pagemap may describe, bounded by the dump's own metadata.

A tiny pagemap can announce gigabytes of zero blocks; decoding or decompressing that would
cost time and disk out of all proportion to the input. criu dumps pages only from the
task's VMAs, so a pid's pagemap entries must lie inside the VMAs of its mm image: that
bounds every decode and rewrite by what the set itself justifies.
"""

from __future__ import annotations

import bisect

from ..errors import ImageError
from .imageset import ImageSet
from .pagemap import Pagemap


def vma_spans(iset: ImageSet, pid: int) -> list[tuple[int, int]] | None:
    """Merged [start, end) spans of the pid's VMAs; None without an mm image."""
    if not (iset.path / f"mm-{pid}.img").exists():
        return None
    spans: list[tuple[int, int]] = []
    for v in sorted((v.start, v.end) for v in iset.mm(pid).vmas):
        if spans and v[0] <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], v[1]))
        else:
            spans.append(v)
    return spans


def outside_vmas(iset: ImageSet, pm: Pagemap) -> list[tuple[int, str]]:
    """(entry index, problem) for entries of a pid's pagemap reaching outside its VMAs."""
    if not isinstance(pm.key, int):
        return []  # shared memory: sized by its own segment, not by one task's VMAs
    try:
        spans = vma_spans(iset, pm.key)
    except ImageError as exc:
        return [(0, f"cannot check against mm-{pm.key}.img: {exc}")]
    if spans is None:
        return []
    starts = [s for s, _ in spans]
    out = []
    for e in pm.entries:
        i = bisect.bisect_right(starts, e.vaddr) - 1
        if i < 0 or e.end > spans[i][1]:
            out.append((e.index, f"pages {e.vaddr:#x}-{e.end:#x} ({e.nr_pages} pages) lie "
                        f"outside the VMAs of mm-{pm.key}.img (criu dumps only VMA pages)"))
            if len(out) >= 10:
                break
    return out
