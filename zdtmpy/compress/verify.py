"""verify_dir: check every invariant of the compressed page format and the version rules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..codec import LAYOUT_BY_ID
from ..errors import ImageError
from ..images.bounds import outside_vmas
from ..images.dirscan import directory_problems
from ..images.imageset import INVENTORY, JOURNAL, ImageSet, load_chain
from ..images.pagemap import MAX_REGION_BYTES, PAGE_SIZE, PE_PAYLOAD_ALIGNED, Pagemap
from ..images.safeopen import open_regular
from .source import entry_chunks


@dataclass(frozen=True)
class Problem:
    layer: str          # the layer directory
    file: str           # file name within the layer
    entry: int | None   # entry index, None for file-level problems
    what: str

    def __str__(self) -> str:
        where = f"{self.layer}/{self.file}"
        if self.entry is not None:
            where += f": entry {self.entry}"
        return f"{where}: {self.what}"


def verify_dir(path: str | os.PathLike[str], chain: bool = False) -> list[Problem]:
    """Problems of the layer at `path` ([] when valid); chain=True checks parents fully too."""
    path = Path(path)
    problems: list[Problem] = []

    def add(file: str, entry: int | None, what: str, layer: Path = path) -> None:
        problems.append(Problem(str(layer), file, entry, what))

    if os.path.lexists(path / JOURNAL):
        add(JOURNAL, None, "an interrupted zdtmpy rewrite is pending (run compress or "
            "decompress on this directory to finish it)")
    try:
        iset = ImageSet(path)
    except ImageError as exc:
        add(INVENTORY, None, str(exc))
        return problems
    try:
        layers = load_chain(path)
    except ImageError as exc:
        add("parent", None, str(exc))
        layers = [iset]
    for layer in layers if chain else layers[:1]:
        problems.extend(_verify_layer(layer))
    if any(p.img_version == 3 for p in layers[1:]) and iset.img_version != 3:
        add(INVENTORY, None, f"img_version {iset.img_version}, but the parent chain holds a "
            "version-3 layer: this layer must be version 3 too")
    return problems


def _verify_layer(iset: ImageSet) -> list[Problem]:
    problems: list[Problem] = []

    def add(file: str, entry: int | None, what: str) -> None:
        problems.append(Problem(str(iset.path), file, entry, what))

    inv = iset.inventory
    version, mode = inv.img_version, inv.compress
    region_size = iset.compress_region_size
    if version not in (2, 3):
        add(INVENTORY, None, f"img_version {version} is not supported (2 or 3 expected)")
    if mode not in LAYOUT_BY_ID:
        add(INVENTORY, None, f"unknown compression layout {mode}")
    if version != 3 and (inv.HasField("compress") or region_size is not None):
        add(INVENTORY, None, f"compression fields set but img_version is {version}")
    if mode == 2:
        if region_size is None:
            add(INVENTORY, None, "compress = 2 (region) without compress_region_size")
        elif region_size <= 0 or region_size % PAGE_SIZE or region_size > MAX_REGION_BYTES:
            add(INVENTORY, None, f"compress_region_size {region_size} is not a page multiple "
                f"up to {MAX_REGION_BYTES >> 20} MiB")
    elif region_size is not None:
        add(INVENTORY, None, f"compress_region_size set with compress = {mode}")

    pms: list[Pagemap] | None
    try:
        pms = list(iset.pagemaps.values())
    except ImageError as exc:
        add(INVENTORY, None, f"cannot load pagemaps: {exc}")
        pms = None
    for name, text in directory_problems(iset.path, pms):
        add(name, None, text)
    if pms is None:
        return problems
    owners: dict[int, str] = {}
    for pm in pms:
        if pm.pages_id in owners:
            add(pm.name, None, f"pages_id {pm.pages_id} is also used by {owners[pm.pages_id]}")
        owners[pm.pages_id] = pm.name
        for index, text in pm.problems():
            add(pm.name, index, text)
        outside = outside_vmas(iset, pm)
        for index, text in outside:
            add(pm.name, index, text)
        for e in pm.entries:
            if e.compressed or e.flags & PE_PAYLOAD_ALIGNED:
                if version != 3:
                    add(pm.name, e.index, f"compressed layout in an img_version {version} layer")
                elif mode == 0:
                    add(pm.name, e.index, "compressed layout but the inventory says compress 0")
            if e.compressed and mode == 1 and e.msg.region_pages:
                add(pm.name, e.index, f"region_pages {e.msg.region_pages} in a per-page layer")
            if e.compressed and mode == 2 and region_size is not None and \
                    e.msg.region_pages * PAGE_SIZE != region_size:
                add(pm.name, e.index, f"region_pages {e.msg.region_pages} does not match "
                    f"compress_region_size {region_size}")
        why = pm.payload_problem()
        if why:
            add(pm.name, None, why)
        elif not pm.problems() and not outside:
            problems.extend(_verify_payload(iset, pm))
    return problems


def _verify_payload(iset: ImageSet, pm: Pagemap) -> list[Problem]:
    """Decode every stored block and check the alignment padding is zero."""
    problems: list[Problem] = []
    if not os.path.lexists(pm.pages_path):
        return problems
    try:
        fd = open_regular(pm.pages_path)
    except ImageError as exc:
        return [Problem(str(iset.path), pm.pages_name, None, str(exc))]
    try:
        pos = 0
        for e in pm.entries:
            if not e.present or e.offset is None:  # layout() places every present entry
                continue
            gap = e.offset - pos
            if gap and os.pread(fd, gap, pos).strip(b"\0"):
                problems.append(Problem(str(iset.path), pm.name, e.index,
                                        "alignment padding before the entry is not zero"))
            pos = e.offset + e.length
            if not e.compressed:
                continue
            try:
                for _ in entry_chunks(fd, pm, e):
                    pass
            except ImageError as exc:
                text = str(exc).replace(f"{pm.path}: entry {e.index} ", "")
                problems.append(Problem(str(iset.path), pm.name, e.index, text))
    finally:
        os.close(fd)
    return problems
