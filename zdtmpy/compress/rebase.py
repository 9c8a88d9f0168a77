"""rebase_dir: rewrite a full dump as an incremental layer on top of a parent chain.

Pages whose content equals what the parent chain holds at the same address become PE_PARENT
entries without payload; changed and new pages stay present. The rewrite (pagemaps, pages,
inventory and the relative `parent` link) is staged and installed all-or-nothing, after every
refusal check: a refused directory is left byte-identical.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from ..codec import Compression
from ..errors import ImageError
from ..images.framing import INVENTORY_MAGIC, write_image
from ..images.imageset import INVENTORY, PARENT_LINK, ImageSet, load_chain
from ..images.pagemap import PAGE_SIZE, PE_PARENT, PE_PRESENT, Entry, Pagemap, PagemapKey
from ..images.reader import PageReader
from ..images.safeopen import open_regular
from .chain import same_tree_problem
from .convert import ConvertResult
from .install import discard_stage, install, new_stage, recover
from .layercheck import load_checked, pages_bytes, refusal
from .source import entry_chunks
from .writer import PagemapWriter

# A present run is written as its own entry once it reaches this size, so memory stays
# bounded whatever the layer size (entries may be split anywhere: blocks never span them).
MAX_RUN_BYTES = 16 << 20
_ONE, _ZERO = b"\x01", b"\x00"


def layer_spec(iset: ImageSet) -> Compression:
    """The Compression a layer is stored in now (to keep its representation)."""
    return Compression.from_ids(iset.compress or 0, iset.compress_region_size or 0)


def rebase_dir(path: str | os.PathLike[str], parent: str | os.PathLike[str],
               spec: Compression | None = None, in_place: bool = False,
               progress: bool | None = None) -> ConvertResult:
    """Make the full dump at `path` a layer on top of `parent` (any representation).

    spec: how the new layer stores its pages (default: as `path` stores them now).
    in_place=False keeps the replaced files as <name>.bak. Returns a ConvertResult whose
    message says how many pages moved to the parent and the pages bytes before/after.
    """
    path, parent = Path(path), Path(parent)
    iset, chain = _check(path, parent)
    spec = spec or layer_spec(iset)
    pms = load_checked(iset, "rebase")
    inv = type(iset.inventory)()
    inv.CopyFrom(iset.inventory)  # keeps every field we do not name
    compressed = spec.enabled
    # version rule: a compressed layer, or any layer above a version-3 one, is version 3
    inv.img_version = 3 if compressed or any(p.img_version == 3 for p in chain) else 2
    if compressed:
        inv.compress = spec.layout_id
    else:
        inv.ClearField("compress")
    if spec.is_region:
        inv.compress_region_size = spec.region_size
    else:
        inv.ClearField("compress_region_size")
    link = os.path.relpath(os.path.realpath(parent), os.path.realpath(path))

    before = pages_bytes(pms)
    stage = new_stage(path)
    names: list[str] = []
    stats = [0, 0]  # pages seen, pages moved to the parent
    try:
        with PageReader(parent) as reader:
            for pm in pms:
                _rebase_pagemap(pm, reader, stage, spec, stats)
                names += [pm.pages_name, pm.name]
        write_image(stage / INVENTORY, INVENTORY_MAGIC, [inv], fsync=True)
        os.symlink(link, stage / PARENT_LINK)
        names += [INVENTORY, PARENT_LINK]
        after = sum(os.path.getsize(stage / pm.pages_name) for pm in pms)
    except ImageError as exc:
        discard_stage(path)
        raise ImageError(f"{path}: rebase onto {parent} failed, nothing was changed: "
                         f"{exc}") from None
    except OSError as exc:  # e.g. ENOSPC while staging
        discard_stage(path)
        raise ImageError(f"{path}: rebase onto {parent} failed, nothing was changed: "
                         f"{exc.filename or path}: {exc.strerror}") from None
    except BaseException:
        discard_stage(path)
        raise
    install(path, names, not in_place)
    seen, moved = stats
    what = spec.describe()
    msg = (f"{path}: rebased onto {link}: {moved} of {seen} pages unchanged (now in the "
           f"parent), {seen - moved} kept; {what}, img_version {inv.img_version}; pages "
           f"{before} -> {after} bytes")
    return ConvertResult(str(path), True, msg, before, after, [str(path)])


def _check(path: Path, parent: Path) -> tuple[ImageSet, list[ImageSet]]:
    """Every refusal, before anything is written: (ImageSet of path, parent chain)."""
    def refuse(why: str) -> NoReturn:
        raise ImageError(f"{path}: refusing to rebase onto {parent}: {why}; nothing was "
                         "changed")

    if not path.is_dir():
        raise ImageError(f"{path}: refusing to rebase: not a directory")
    recover(path)
    try:
        iset = ImageSet(path)
    except ImageError as exc:
        raise ImageError(f"refusing to rebase: {exc}") from None
    if not parent.is_dir():
        refuse("the parent directory does not exist" if not parent.exists()
               else "the parent is not a directory")
    if iset.parent_link is not None:
        refuse(f"it already has a parent link ({iset.parent_link!r}); rebase takes a full "
               "dump (decompress the chain and copy the layer's pages first)")
    try:
        chain = load_chain(parent)
    except ImageError as exc:
        refuse(f"the parent is not a usable image chain: {exc}")
    me = os.path.realpath(path)
    for layer in chain:
        if os.path.realpath(layer.path) == me:
            refuse("this would make a cycle of parent links (the directory is the parent "
                   "or one of its ancestors)")
        if layer.journal_pending:
            refuse(f"{layer.path} has an interrupted zdtmpy rewrite pending")
        why = refusal(layer)
        if why:
            refuse(f"parent layer {layer.path}: {why}")
    why = same_tree_problem(iset, chain[0])
    if why:
        refuse(f"the parent belongs to another process tree: {why}")
    try:
        pms = list(iset.pagemaps.values())
    except ImageError as exc:
        refuse(str(exc))
    for pm in pms:
        for e in pm.entries:
            if e.flags & PE_PARENT:
                refuse(f"{pm.name} entry {e.index} is PE_PARENT but the directory has no "
                       "parent: it is not a full dump")
    return iset, chain


def _usable(ppm: Pagemap | None, start: int, stop: int) -> list[tuple[int, int]]:
    """Address ranges within [start, stop) the parent layer can serve (present or deeper)."""
    if ppm is None:
        return []
    out: list[tuple[int, int]] = []
    e = ppm.find(start)
    pos = start
    while pos < stop:
        if e is None:
            nxt = ppm.next_start(pos)
            if nxt is None or nxt >= stop:
                break
            pos = nxt
            e = ppm.find(pos)
            continue
        end = min(stop, e.end)
        if e.flags & (PE_PRESENT | PE_PARENT):
            if out and out[-1][1] == pos:
                out[-1] = (out[-1][0], end)
            else:
                out.append((pos, end))
        pos = end
        e = ppm.find(pos) if pos < stop else None
    return out


def unchanged_mask(reader: PageReader, key: PagemapKey, ppm: Pagemap | None, vaddr: int,
                   data: bytes) -> bytearray:
    """bytearray, one byte per page of `data` (at vaddr): 1 where the parent chain holds
    the same bytes. Whole ranges are compared first; only differing ones page by page."""
    npages = len(data) // PAGE_SIZE
    mask = bytearray(npages)
    for a, b in _usable(ppm, vaddr, vaddr + len(data)):
        theirs = reader.read(key, a, (b - a) // PAGE_SIZE)
        off = a - vaddr
        mine = data[off:off + len(theirs)]
        p0 = off // PAGE_SIZE
        if mine == theirs:
            mask[p0:p0 + len(theirs) // PAGE_SIZE] = _ONE * (len(theirs) // PAGE_SIZE)
            continue
        for i in range(0, len(theirs), PAGE_SIZE):
            if mine[i:i + PAGE_SIZE] == theirs[i:i + PAGE_SIZE]:
                mask[p0 + i // PAGE_SIZE] = 1
    return mask


class _Runs:
    """Turns per-page unchanged/changed verdicts into PE_PARENT and present entries."""

    def __init__(self, writer: PagemapWriter, e: Entry) -> None:
        self.w, self.e = writer, e
        self.kind: bool | None = None   # the current run: unchanged (True) or changed
        self.start, self.pages = e.vaddr, 0
        self.pieces: list[bytes] = []
        self.moved = 0

    def feed(self, vaddr: int, data: bytes, mask: bytearray) -> None:
        i, n = 0, len(mask)
        while i < n:
            same = mask[i] == 1
            j = mask.find(_ZERO if same else _ONE, i)
            j = n if j < 0 else j
            self._extend(same, vaddr + i * PAGE_SIZE, j - i,
                         None if same else data[i * PAGE_SIZE:j * PAGE_SIZE])
            i = j

    def _extend(self, same: bool, vaddr: int, pages: int, piece: bytes | None) -> None:
        if self.kind is not same or (not same and self.pages * PAGE_SIZE >= MAX_RUN_BYTES):
            self.flush()
            self.kind, self.start = same, vaddr
        self.pages += pages
        if piece is not None:
            self.pieces.append(piece)

    def flush(self) -> None:
        if not self.pages:
            return
        if self.kind:
            self.w.add(self.start, self.pages, PE_PARENT, b"", template=self.e.msg)
            self.moved += self.pages
        else:
            self.w.add(self.start, self.pages, self.e.flags, self.pieces, template=self.e.msg)
        self.kind, self.pages, self.pieces = None, 0, []


def _rebase_pagemap(pm: Pagemap, reader: PageReader, stage: Path, spec: Compression,
                    stats: list[int]) -> None:
    key = pm.key
    if key is None:  # ImageSet.pagemaps holds only files named as criu names them
        raise ImageError(f"{pm.path}: not a pagemap file name")
    ppm = reader.layers[0].pagemaps.get(key)
    fd = open_regular(pm.pages_path) if os.path.lexists(pm.pages_path) else None
    try:
        with PagemapWriter(stage, pm.name, pm.pages_id, spec, head_template=pm.head) as w:
            for e in pm.entries:
                if not e.present:  # e.g. PE_LAZY only: nothing to compare, keep as is
                    w.add(e.vaddr, e.nr_pages, e.flags, b"", template=e.msg)
                    continue
                if fd is None:
                    raise ImageError(f"{pm.path}: entry {e.index}: present pages but no "
                                     f"{pm.pages_name}")
                runs = _Runs(w, e)
                pos = e.vaddr
                for chunk in entry_chunks(fd, pm, e):
                    runs.feed(pos, chunk, unchanged_mask(reader, key, ppm, pos, chunk))
                    pos += len(chunk)
                runs.flush()
                stats[0] += e.nr_pages
                stats[1] += runs.moved
    finally:
        if fd is not None:
            os.close(fd)
