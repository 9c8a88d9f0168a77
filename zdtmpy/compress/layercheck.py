"""Refusals shared by the layer rewriters (convert, rebase): checked before anything is
written, so a refused directory stays byte-identical."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NoReturn

from ..codec import LAYOUT_BY_ID
from ..errors import ImageError
from ..images.bounds import outside_vmas
from ..images.imageset import INVENTORY, ImageSet
from ..images.pagemap import Pagemap

SUPPORTED_VERSIONS = (2, 3)


def refusal(iset: ImageSet) -> str | None:
    """Why this layer must not be converted, or None."""
    inv = iset.inventory
    if iset.img_version not in SUPPORTED_VERSIONS:
        return f"img_version {iset.img_version} is not supported (only 2 and 3)"
    if inv.compress not in LAYOUT_BY_ID:
        return f"unknown compression layout {inv.compress} in {INVENTORY}"
    if iset.img_version == 2 and (inv.HasField("compress") or
                                  inv.HasField("compress_region_size")):
        return f"{INVENTORY} has compression fields but img_version 2"
    return None


def load_checked(iset: ImageSet, action: str) -> list[Pagemap]:
    """The layer's pagemaps, refusing (ImageError) anything a rewrite could make worse."""
    def refuse(why: str) -> NoReturn:
        raise ImageError(f"{iset.path}: refusing to {action}: {why}; nothing was changed")

    why = refusal(iset)
    if why:
        refuse(why)
    if os.path.islink(iset.path / INVENTORY):
        refuse(f"{INVENTORY} is a symlink")
    for name in iset.pagemap_names():
        if os.path.islink(iset.path / name):
            refuse(f"{name} is a symlink")
    try:
        pms = list(iset.pagemaps.values())
    except ImageError as exc:
        refuse(str(exc))
    owners: dict[int, str] = {}
    for pm in pms:
        if os.path.islink(pm.pages_path):
            refuse(f"{pm.pages_name} is a symlink")
        if pm.pages_id in owners:
            refuse(f"{pm.pages_name} is named by both {owners[pm.pages_id]} and {pm.name}")
        owners[pm.pages_id] = pm.name
        for index, text in pm.problems() + outside_vmas(iset, pm):
            refuse(f"{pm.name} entry {index}: {text}")
        why = pm.payload_problem()
        if why:
            refuse(f"{pm.name}: {why}")
    return pms


def pages_bytes(pms: Iterable[Pagemap]) -> int:
    return sum(os.path.getsize(pm.pages_path) for pm in pms if os.path.exists(pm.pages_path))


