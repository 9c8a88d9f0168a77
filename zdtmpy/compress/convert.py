"""compress_dir / decompress_dir: rewrite an image directory's pages, all-or-nothing.

Refusals happen before anything is written, so refused directories stay byte-identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..codec import LAYOUT_BY_ID, OFF, Compression
from ..errors import ImageError
from ..images.framing import INVENTORY_MAGIC, write_image
from ..images.imageset import INVENTORY, ImageSet, load_chain
from ..images.messages import Message
from ..images.pagemap import PAGE_SIZE, PE_PAYLOAD_ALIGNED, Pagemap
from ..images.safeopen import open_regular
from .install import discard_stage, install, new_stage, recover
from .layercheck import load_checked, pages_bytes, refusal
from .progress import Progress
from .source import entry_source
from .writer import PagemapWriter
from .writersource import SourcedEntry


@dataclass
class ConvertResult:
    path: str
    changed: bool
    message: str
    bytes_before: int = 0
    bytes_after: int = 0
    layers: list[str] = field(default_factory=list)  # layer dirs rewritten


def _rewrite(iset: ImageSet, pms: list[Pagemap], spec: Compression,
             inventory: Message | None, backup: bool, progress: bool | None, label: str) -> int:
    """Stage new pagemap/pages pairs (and inventory) for `pms`, then install them."""
    path = iset.path
    total = sum(e.nr_pages * PAGE_SIZE for pm in pms for e in pm.entries if e.present)
    bar = Progress(total, f"{label} {path.name}", enabled=progress)
    stage = new_stage(path)
    names: list[str] = []
    after = 0
    try:
        for pm in pms:
            fd = open_regular(pm.pages_path) if os.path.lexists(pm.pages_path) else None
            # decompress: pages that already lie where the plain layout puts them stay
            kept = not spec.enabled and fd is not None and _pages_plain(pm)
            try:
                with PagemapWriter(stage, pm.name, pm.pages_id, spec,
                                   head_template=pm.head) as w:
                    if fd is not None and (spec.enabled or kept):
                        w.keep_identical(fd)   # compress: while every block is raw
                    plain: list[SourcedEntry] = []   # decompress: all at once
                    for e in pm.entries:
                        if e.present and fd is None:
                            raise ImageError(f"{pm.path}: entry {e.index}: present pages but "
                                             f"no {pm.pages_name}")
                        src = entry_source(fd, pm, e, bar) if fd is not None and e.present \
                            else None
                        if kept:
                            if e.offset is not None:
                                w.add_kept(e.vaddr, e.nr_pages, e.flags, e.offset, e.msg)
                                bar.update(e.nr_pages * PAGE_SIZE)
                            else:
                                w.add(e.vaddr, e.nr_pages, e.flags, template=e.msg)
                        elif not spec.enabled:
                            plain.append((e.vaddr, e.nr_pages, e.flags, src, e.msg))
                        elif e.compressed:
                            w.add(e.vaddr, e.nr_pages, e.flags, src or b"", template=e.msg)
                        elif src is not None:   # compress: pipelined across entries
                            w.begin_source(e.vaddr, e.nr_pages, e.flags, src, template=e.msg)
                        else:
                            w.begin(e.vaddr, e.nr_pages, e.flags, template=e.msg)
                    if plain:
                        w.copy_sources(plain)
            finally:
                if fd is not None:
                    os.close(fd)
            if w.pages_kept:   # the pages file stays as it is: only the pagemap changes
                names.append(pm.name)
                after += os.path.getsize(pm.pages_path)
            else:
                names += [pm.pages_name, pm.name]
                after += os.path.getsize(stage / pm.pages_name)
        if inventory is not None:
            write_image(stage / INVENTORY, INVENTORY_MAGIC, [inventory], fsync=True)
            names.append(INVENTORY)
    except OSError as exc:  # e.g. ENOSPC while staging: the first error is the one to show
        discard_stage(path)
        raise ImageError(f"{path}: {label} failed, nothing was changed: "
                         f"{exc.filename or path}: {exc.strerror}") from None
    except BaseException:
        discard_stage(path)
        raise
    finally:
        bar.close()
    install(path, names, backup)
    return after


def compress_dir(path: str | os.PathLike[str], spec: Compression, in_place: bool = False,
                 progress: bool | None = None) -> ConvertResult:
    """Compress one layer (its parents are left alone). Returns a ConvertResult."""
    path = Path(path)
    if not spec.enabled:
        raise ImageError(f"{path}: compression layout 'off' means decompress; "
                         "use decompress_dir")
    recover(path)
    iset = ImageSet(path)
    why = refusal(iset)
    if why:
        raise ImageError(f"{path}: refusing to compress: {why}; nothing was changed")
    if iset.compress:
        return ConvertResult(str(path), False, f"{path}: already compressed "
                             f"({LAYOUT_BY_ID[iset.compress]} layout); nothing changed")
    pms = load_checked(iset, "compress")
    inv = type(iset.inventory)()
    inv.CopyFrom(iset.inventory)  # keeps every field we do not name
    spec.stamp(inv)
    before = pages_bytes(pms)
    after = _rewrite(iset, pms, spec, inv, not in_place, progress, "compress")
    what = spec.describe()
    return ConvertResult(str(path), True,
                         f"{path}: compressed {len(pms)} pagemap(s), {what}: {before} -> "
                         f"{after} bytes", before, after, [str(path)])


def _pages_plain(pm: Pagemap) -> bool:
    """No entry is compressed and every present one lies where the plain layout puts it
    (flagged PE_PAYLOAD_ALIGNED at most, without padding): the pages file is already the
    decompressed one."""
    pos = 0
    for e in pm.entries:
        if e.offset is None:
            continue
        if e.compressed or e.offset != pos:
            return False
        pos += e.nr_pages * PAGE_SIZE
    return True


def _needs_pages(pm: Pagemap) -> bool:
    return any(e.compressed or e.flags & PE_PAYLOAD_ALIGNED for e in pm.entries)


def decompress_dir(path: str | os.PathLike[str], in_place: bool = False, chain: bool = False,
                   progress: bool | None = None) -> ConvertResult:
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
    plans: list[tuple[ImageSet, list[Pagemap], Message]] = []
    for layer in layers:  # check every layer before touching any
        pms = load_checked(layer, "decompress")
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
    spec = OFF
    before = after = 0
    lines: list[str] = []
    for layer, todo, inv in plans:
        b = pages_bytes(todo)
        a = _rewrite(layer, todo, spec, inv, not in_place, progress, "decompress")
        before, after = before + b, after + a
        lines.append(f"{layer.path}: decompressed {len(todo)} pagemap(s): {b} -> {a} bytes, "
                     f"img_version {inv.img_version}")
    return ConvertResult(str(path), True, "\n".join(lines), before, after,
                         [str(layer.path) for layer, _, _ in plans])
