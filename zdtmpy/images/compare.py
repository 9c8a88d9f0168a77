"""Compare two image files as parsed messages: serialisation is not canonical, bytes are not
the test (FORMAT.md: compare parsed messages, not bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import messages
from .framing import INVENTORY_MAGIC, PAGEMAP_MAGIC, read_image


def _decoded(path: Path) -> tuple[int, tuple[Any, ...]]:
    img = read_image(path)
    if img.magic == INVENTORY_MAGIC:
        kinds = [messages.InventoryEntry] * len(img.entries)
    elif img.magic == PAGEMAP_MAGIC:
        kinds = [messages.PagemapHead] + [messages.PagemapEntry] * (len(img.entries) - 1)
    else:  # unknown kinds: the raw entries are all we can compare
        return img.magic, tuple(bytes(e) for e in img.entries)
    return img.magic, tuple(messages.decode(k, e, str(path)) for k, e in zip(kinds, img.entries))


def same_image(a: Path, b: Path) -> bool:
    """True when both files hold the same magic and equal messages, entry by entry."""
    return _decoded(Path(a)) == _decoded(Path(b))
