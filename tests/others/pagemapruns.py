"""Pagemaps compared by the pages they describe, not by how criu cut them into entries.

criu's dump cuts an entry where a page-pipe buffer is full. Its pipes grow (F_SETPIPE_SZ)
up to fs.pipe-max-size, and root here lacks CAP_SYS_RESOURCE to go beyond it: at 1 MiB an
entry holds at most 256 pages, at 4 MiB 1024. That sysctl is global and changes while a test
runs (a zdtmpy session raises it for criu's remote lazy pages; the last session out puts it
back), so two dumps of the same unchanged process may cut the same pages differently.
"""

from __future__ import annotations

from typing import Any

from zdtmpy.images import Pagemap
from zdtmpy.images.pagemap import PAGE_SIZE

Run = tuple[int, int, tuple[bool, str]]   # (vaddr, pages, the entries' other fields)


def entry_fields(msg: Any) -> tuple[bool, str]:
    """Every field of a pagemap entry but where it starts and how many pages it has: whether
    the count is in field 5 (criu 4.2's nr_pages) and the rest as text."""
    m = msg.__deepcopy__()
    has_nr_pages = m.HasField("nr_pages")
    for name in ("vaddr", "nr_pages", "compat_nr_pages"):
        m.ClearField(name)
    return has_nr_pages, str(m)


def page_runs(pm: Pagemap) -> list[Run]:
    """The entries of `pm` joined into maximal runs: an entry that starts where the previous
    one ends, with the same other fields, extends it. Pages files are written in entry order,
    so joining changes nothing in them."""
    runs: list[Run] = []
    for e in pm.entries:
        fields = entry_fields(e.msg)
        if runs:
            vaddr, pages, prev = runs[-1]
            if prev == fields and vaddr + pages * PAGE_SIZE == e.vaddr:
                runs[-1] = (vaddr, pages + e.nr_pages, fields)
                continue
        runs.append((e.vaddr, e.nr_pages, fields))
    return runs
