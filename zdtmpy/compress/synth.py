"""Build small image layers from Python data (for tests, benchmarks and experiments).

Only the files the page machinery reads are made: inventory, pstree, pagemap/pages pairs,
the parent link. They are not restorable by criu.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..codec import OFF, Compression
from ..images import messages
from ..images.framing import INVENTORY_MAGIC, PSTREE_MAGIC, write_image
from ..images.pagemap import PagemapKey, pagemap_name
from .pipeline import Buf
from .writer import PagemapWriter

# (vaddr, nr_pages, flags, payload or None)
EntrySpec = tuple[int, int, int, "Buf | Iterable[Buf] | None"]


def make_layer(path: str | os.PathLike[str], pagemaps: Mapping[PagemapKey, Sequence[EntrySpec]],
               img_version: int = 2, parent: str | None = None, pids: list[int] | None = None,
               spec: Compression | None = None) -> Path:
    """pagemaps: {key: [(vaddr, nr_pages, flags, data), ...]}; key a pid or ("shmem", id).

    spec: Compression for the pages (default off); a compressed spec sets img_version 3
    and the inventory's compress fields. parent: text of the `parent` symlink (e.g. "../1").
    pids: pstree pids (default: the int keys). Returns the Path.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    spec = spec or OFF
    inv = messages.InventoryEntry(img_version=img_version)
    if spec.enabled:
        spec.stamp(inv)
    write_image(path / "inventory.img", INVENTORY_MAGIC, [inv])
    if pids is None:
        pids = sorted(k for k in pagemaps if isinstance(k, int))
    tree = [messages.PstreeEntry(pid=p, ppid=0, pgid=pids[0], sid=pids[0]) for p in pids]
    write_image(path / "pstree.img", PSTREE_MAGIC, tree)
    for pages_id, (key, entries) in enumerate(sorted(pagemaps.items(), key=str), start=1):
        with PagemapWriter(path, pagemap_name(key), pages_id, spec) as w:
            for vaddr, nr_pages, flags, data in entries:
                w.add(vaddr, nr_pages, flags, data or b"")
    if parent is not None:
        os.symlink(parent, path / "parent")
    return path
