"""compress_dir / decompress_dir: rewrite an image directory's pages, all-or-nothing.

Refusals happen before anything is written, so refused directories stay byte-identical.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageError
from ..images.bounds import outside_vmas
from ..images.framing import INVENTORY_MAGIC, write_image
from ..images.imageset import INVENTORY, ImageSet, load_chain
from ..images.pagemap import PAGE_SIZE, PE_PAYLOAD_ALIGNED
from ..images.safeopen import open_regular
from .codec import MODES, CompressionSpec
from .install import discard_stage, install, new_stage, recover
from .progress import Progress
from .source import entry_source
from .writer import PagemapWriter

MODE_NAMES = {v: k for k, v in MODES.items()}
SUPPORTED_VERSIONS = (2, 3)


@dataclass
class ConvertResult:
    path: str
    changed: bool
    message: str
    bytes_before: int = 0
    bytes_after: int = 0
    layers: list = field(default_factory=list)  # layer dirs rewritten


def _refusal(iset):
    """Why this layer must not be converted, or None."""
    inv = iset.inventory
    if iset.img_version not in SUPPORTED_VERSIONS:
        return f"img_version {iset.img_version} is not supported (only 2 and 3)"
    if inv.compress not in MODE_NAMES:
        return f"unknown compression mode {inv.compress} in {INVENTORY}"
    if iset.img_version == 2 and (inv.HasField("compress") or
                                  inv.HasField("compress_region_size")):
        return f"{INVENTORY} has compression fields but img_version 2"
    return None


def _load_checked(iset, action):
    """The layer's pagemaps, refusing (ImageError) anything a rewrite could make worse."""
    def refuse(why):
        raise ImageError(f"{iset.path}: refusing to {action}: {why}; nothing was changed")

    why = _refusal(iset)
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
    owners = {}
    for pm in pms:
        if os.path.islink(pm.pages_path):
            refuse(f"{pm.pages_name} is a symlink")
        if pm.pages_id in owners:
            refuse(f"{pm.pages_name} is named by both {owners[pm.pages_id]} and {pm.name}")
        owners[pm.pages_id] = pm.name
        for index, text in pm.problems() + outside_vmas(iset, pm):
            refuse(f"{pm.name} entry {index}: {text}")
        text = pm.payload_problem()
        if text:
            refuse(f"{pm.name}: {text}")
    return pms


def _pages_bytes(pms):
    return sum(os.path.getsize(pm.pages_path) for pm in pms if os.path.exists(pm.pages_path))


def _rewrite(iset, pms, spec, inventory, backup, progress, label):
    """Stage new pagemap/pages pairs (and inventory) for `pms`, then install them."""
    path = iset.path
    total = sum(e.nr_pages * PAGE_SIZE for pm in pms for e in pm.entries if e.present)
    bar = Progress(total, f"{label} {path.name}", enabled=progress)
    stage = new_stage(path)
    names = []
    try:
        for pm in pms:
            fd = open_regular(pm.pages_path) if os.path.lexists(pm.pages_path) else None
            try:
                with PagemapWriter(stage, pm.name, pm.pages_id, spec,
                                   head_template=pm.head) as w:
                    for e in pm.entries:
                        data = entry_source(fd, pm, e, bar) if e.present else b""
                        w.add(e.vaddr, e.nr_pages, e.flags, data, template=e.msg)
            finally:
                if fd is not None:
                    os.close(fd)
            names += [pm.pages_name, pm.name]
        if inventory is not None:
            write_image(stage / INVENTORY, INVENTORY_MAGIC, [inventory], fsync=True)
            names.append(INVENTORY)
    except BaseException:
        discard_stage(path)
        raise
    finally:
        bar.close()
    after = sum(os.path.getsize(stage / pm.pages_name) for pm in pms)
    install(path, names, backup)
    return after


def compress_dir(path, spec, in_place=False, progress=None):
    """Compress one layer (its parents are left alone). Returns a ConvertResult."""
    path = Path(path)
    if spec.mode == "off":
        raise ImageError(f"{path}: compression mode 'off' means decompress; "
                         "use decompress_dir")
    recover(path)
    iset = ImageSet(path)
    why = _refusal(iset)
    if why:
        raise ImageError(f"{path}: refusing to compress: {why}; nothing was changed")
    if iset.compress:
        return ConvertResult(str(path), False, f"{path}: already compressed "
                             f"({MODE_NAMES[iset.compress]} mode); nothing changed")
    pms = _load_checked(iset, "compress")
    inv = type(iset.inventory)()
    inv.CopyFrom(iset.inventory)  # keeps every field we do not name
    spec.stamp(inv)
    before = _pages_bytes(pms)
    after = _rewrite(iset, pms, spec, inv, not in_place, progress, "compress")
    what = "per-page" if spec.mode == "page" else f"region {spec.region_size >> 10} KiB"
    return ConvertResult(str(path), True,
                         f"{path}: compressed {len(pms)} pagemap(s), {what}: {before} -> "
                         f"{after} bytes", before, after, [str(path)])


def _needs_pages(pm):
    return any(e.compressed or e.flags & PE_PAYLOAD_ALIGNED for e in pm.entries)


def decompress_dir(path, in_place=False, chain=False, progress=None):
    """Decompress one layer, or with chain=True the layer and all its parents.

    Version rule: a layer without parent goes back to img_version 2. With chain=True every
    layer of the chain ends up uncompressed, so all of them go back to 2 (the chain is then
    readable by a CRIU that predates compression); otherwise a layer with a parent keeps 3.
    """
    path = Path(path)
    recover(path)
    layers = load_chain(path) if chain else [ImageSet(path)]
    if chain and any(recover(layer.path) for layer in layers[1:]):
        layers = load_chain(path)
    plans = []
    for layer in layers:  # check every layer before touching any
        pms = _load_checked(layer, "decompress")
        inv = type(layer.inventory)()
        inv.CopyFrom(layer.inventory)
        inv.ClearField("compress")
        inv.ClearField("compress_region_size")
        if chain or layer.parent_link is None:
            inv.img_version = 2
        todo = [pm for pm in pms if _needs_pages(pm)]
        if todo or inv != layer.inventory:
            plans.append((layer, todo, inv))
    if not plans:
        return ConvertResult(str(path), False, f"{path}: already decompressed; nothing changed")
    spec = CompressionSpec("off")
    before = after = 0
    lines = []
    for layer, todo, inv in plans:
        b = _pages_bytes(todo)
        a = _rewrite(layer, todo, spec, inv, not in_place, progress, "decompress")
        before, after = before + b, after + a
        lines.append(f"{layer.path}: decompressed {len(todo)} pagemap(s): {b} -> {a} bytes, "
                     f"img_version {inv.img_version}")
    return ConvertResult(str(path), True, "\n".join(lines), before, after,
                         [str(layer.path) for layer, _, _ in plans])
