"""One image layer (a dump directory) and the chain of layers its parent links form."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ImageError
from . import messages
from .framing import INVENTORY_MAGIC, MM_MAGIC, PSTREE_MAGIC, read_image
from .pagemap import Pagemap, PagemapKey, pagemap_key

INVENTORY = "inventory.img"
PARENT_LINK = "parent"
JOURNAL = ".zdtmpy-journal"  # written by zdtmpy.compress while installing a rewrite


class ImageSet:
    """One layer: inventory, pagemaps (pagemap-<pid>.img, pagemap-shmem-<id>.img), parent link."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ImageError(f"{self.path}: not a directory")
        inv_path = self.path / INVENTORY
        if not inv_path.exists():
            raise ImageError(f"{self.path}: not an image set (no {INVENTORY})")
        raw = read_image(inv_path, INVENTORY_MAGIC)
        if len(raw.entries) != 1:
            raise ImageError(f"{inv_path}: expected 1 inventory entry, found {len(raw.entries)}")
        self.inventory: Any = messages.decode(messages.InventoryEntry, raw.entries[0],
                                              str(inv_path))
        self._pagemaps: dict[PagemapKey, Pagemap] | None = None

    def __repr__(self) -> str:
        return f"ImageSet({str(self.path)!r})"

    @property
    def img_version(self) -> int:
        return int(self.inventory.img_version)

    @property
    def compress(self) -> int:
        return int(self.inventory.compress)

    @property
    def compress_region_size(self) -> int | None:
        inv = self.inventory
        return int(inv.compress_region_size) if inv.HasField("compress_region_size") else None

    @property
    def journal_pending(self) -> bool:
        """True while an interrupted zdtmpy rewrite still has to be completed."""
        return os.path.lexists(self.path / JOURNAL)

    @property
    def parent_link(self) -> str | None:
        """Text of the `parent` symlink (e.g. "../1"), or None when the layer has no parent."""
        link = self.path / PARENT_LINK
        if link.is_symlink():
            return os.readlink(link)
        return PARENT_LINK if link.exists() else None

    @property
    def parent_path(self) -> Path | None:
        if self.parent_link is None:
            return None
        # resolved like the kernel does for criu: relative to the layer directory itself
        return Path(os.path.realpath(self.path / PARENT_LINK))

    def parent(self) -> ImageSet | None:
        """The parent ImageSet, None without a link; ImageError for a broken link."""
        link = self.parent_link
        if link is None:
            return None
        target = self.parent_path
        if target is None or not target.exists():
            raise ImageError(f"{self.path}: parent link {link!r} points to a missing "
                             f"directory {target}")
        try:
            return ImageSet(target)
        except ImageError as exc:
            raise ImageError(f"{self.path}: parent link {link!r} does not lead to a usable "
                             f"image set: {exc}") from None

    def pagemap_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.path) if pagemap_key(n) is not None)

    @property
    def pagemaps(self) -> dict[PagemapKey, Pagemap]:
        """{key: Pagemap}; key is a pid (int) or ("shmem", id)."""
        if self._pagemaps is None:
            maps: dict[PagemapKey, Pagemap] = {}
            for n in self.pagemap_names():
                key = pagemap_key(n)
                if key is not None:
                    maps[key] = Pagemap.load(self.path / n)
            self._pagemaps = maps
        return self._pagemaps

    def pstree(self) -> list[Any] | None:
        """pstree entries, or None when this layer has no pstree.img."""
        path = self.path / "pstree.img"
        if not path.exists():
            return None
        raw = read_image(path, PSTREE_MAGIC)
        return [messages.decode(messages.PstreeEntry, d, f"{path}: entry {i}")
                for i, d in enumerate(raw.entries)]

    def pids(self) -> list[int]:
        tree = self.pstree()
        if tree is not None:
            return [int(e.pid) for e in tree]
        return sorted(k for k in self.pagemaps if isinstance(k, int))

    def mm(self, pid: int) -> Any:
        path = self.path / f"mm-{pid}.img"
        if not path.exists():
            raise ImageError(f"{self.path}: no mm-{pid}.img (pid {pid} not in this dump?)")
        raw = read_image(path, MM_MAGIC)
        if len(raw.entries) != 1:
            raise ImageError(f"{path}: expected 1 mm entry, found {len(raw.entries)}")
        return messages.decode(messages.MmEntry, raw.entries[0], str(path))


def load_chain(path: str | os.PathLike[str]) -> list[ImageSet]:
    """[layer, parent, grandparent, ...] with every broken-chain case as an ImageError."""
    top = ImageSet(path)
    chain = [top]
    seen = {os.path.realpath(top.path)}
    tree = _pid_set(top)
    layer = top
    while True:
        parent = layer.parent()
        if parent is None:
            return chain
        real = os.path.realpath(parent.path)
        if real in seen:
            raise ImageError(f"{layer.path}: parent link {layer.parent_link!r} forms a cycle "
                             f"back to {parent.path}")
        seen.add(real)
        ptree = _pid_set(parent)
        if tree is not None and ptree is not None and ptree != tree:
            raise ImageError(f"{layer.path}: parent {parent.path} belongs to another process "
                             f"tree (pids {sorted(ptree)} vs {sorted(tree)})")
        tree = tree if tree is not None else ptree
        chain.append(parent)
        layer = parent


def _pid_set(iset: ImageSet) -> set[int] | None:
    tree = iset.pstree()
    return None if tree is None else {e.pid for e in tree}
