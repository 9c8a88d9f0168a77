"""Where a shared mapping's pages live: which `pagemap-shmem-<id>.img` backs a VMA.

Shared anonymous memory is dumped once, as a shmem object, not in any process's pagemap.
A VMA flagged anon-shared names the shmem id itself; a memfd mapping names a file id, which
files.img resolves to a memfd inode, whose entry in memfd.img holds the shmem id. A shared
mapping of an ordinary file keeps its pages in that file: it has no shmem object.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from ..errors import ImageError
from . import messages
from .framing import FILES_MAGIC, MEMFD_INODE_MAGIC, read_image

VMA_ANON_SHARED = 1 << 8
VMA_AREA_MEMFD = 1 << 14


@functools.lru_cache(maxsize=64)
def _memfd_shmids(layer_dir: str) -> dict[int, int]:
    """file id -> shmem id for every memfd file of one layer."""
    d = Path(layer_dir)
    if not (d / "files.img").exists() or not (d / "memfd.img").exists():
        return {}
    inodes = {}
    for i, raw in enumerate(read_image(d / "memfd.img", MEMFD_INODE_MAGIC).entries):
        e = messages.decode(messages.MemfdInodeEntry, raw, f"{d}/memfd.img entry {i}")
        inodes[e.inode_id] = e.shmid
    out = {}
    for i, raw in enumerate(read_image(d / "files.img", FILES_MAGIC).entries):
        f = messages.decode(messages.FileEntry, raw, f"{d}/files.img entry {i}")
        if f.HasField("memfd"):
            if f.memfd.inode_id not in inodes:
                raise ImageError(f"{d}/files.img entry {i}: memfd inode {f.memfd.inode_id} "
                                 f"is not in {d}/memfd.img")
            out[f.id] = inodes[f.memfd.inode_id]
    return out


def shmem_key(layer_dir: str | os.PathLike[str], vma: Any) -> tuple[str, int] | None:
    """("shmem", id) holding the VMA's pages, or None when they are not in the images."""
    if vma.status & VMA_AREA_MEMFD:
        shmid = _memfd_shmids(str(layer_dir)).get(vma.shmid)
        if shmid is None:
            raise ImageError(f"{layer_dir}: memfd mapping {vma.start:#x}-{vma.end:#x} names "
                             f"file id {vma.shmid}, which files.img does not list as a memfd")
        return ("shmem", shmid)
    if vma.status & VMA_ANON_SHARED:
        return ("shmem", int(vma.shmid))
    return None
