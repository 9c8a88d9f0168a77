"""dedup_chain: drop from a chain's parent layers every page the top layer no longer reads.

A page of a parent layer is *live* when the top layer resolves that address through it
(the top and every layer between say PE_PARENT there). Everything else in a parent, pages
a child rewrote, is dead weight: criu's own `dedup` punches holes for it in plain pages
files. This works for every layer format by rewriting each parent's pagemap to its live
ranges only, in the layer's own representation:

* plain: the live pages are copied;
* per-page LZ4: the live pages' stored blocks are copied as they are, dead blocks dropped;
* region LZ4: an entry's live pages are re-encoded into regions starting at each live run,
  so a region disappears when every page of it was replaced, and a partly replaced one is
  re-encoded with its live pages only.

Only the top layer stays restorable (as with criu's dedup). Each layer's rewrite is staged
and installed all-or-nothing, and is safe on its own: it removes only pages no layer above
reads, so an interruption between layers leaves a sound chain.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..codec import Compression
from ..errors import ImageError
from ..images.imageset import ImageSet, load_chain
from ..images.pagemap import PAGE_SIZE, PE_PARENT, Entry, Pagemap, PagemapKey
from ..images.safeopen import open_regular
from .install import discard_stage, install, new_stage, recover
from .layercheck import load_checked
from .rebase import layer_spec
from .source import entry_chunks
from .writer import PagemapWriter

Ranges = list[tuple[int, int]]  # sorted, disjoint [start, end) address ranges
MAX_PIECE = 16 << 20  # a live run is written as entries of at most this many decoded bytes
LivePlan = dict[PagemapKey, Ranges]  # one parent layer: its pages the top layer still reads


@dataclass
class LayerDedup:
    path: str
    pages_before: int  # live + dead pages stored
    pages_after: int
    bytes_before: int  # allocated bytes of the pages files (holes do not count)
    bytes_after: int


@dataclass
class DedupResult:
    top: str
    layers: list[LayerDedup] = field(default_factory=list)

    @property
    def bytes_saved(self) -> int:
        return sum(x.bytes_before - x.bytes_after for x in self.layers)

    @property
    def message(self) -> str:
        if not self.layers:
            return f"{self.top}: no parent layer, nothing to deduplicate"
        lines = [f"{x.path}: {x.pages_before - x.pages_after} of {x.pages_before} stored "
                 f"pages dropped; pages {x.bytes_before} -> {x.bytes_after} bytes"
                 for x in self.layers]
        return "\n".join(lines + [f"{self.top}: {self.bytes_saved} bytes saved in "
                                  f"{len(self.layers)} parent layer(s)"])


def allocated_bytes(path: Path) -> int:
    """Bytes the pages files of a layer occupy on disk (punched holes excluded)."""
    return sum(p.lstat().st_blocks * 512 for p in Path(path).glob("pages-*.img")
               if p.is_file() and not p.is_symlink())


def dedup_chain(top: str | os.PathLike[str], in_place: bool = False) -> DedupResult:
    """Rewrite every parent layer of the chain whose top is `top` to what `top` reads.

    in_place=False keeps replaced files as <name>.bak (then nothing is saved on disk until
    they are removed). Refuses (ImageError, nothing changed) a layer it cannot rewrite."""
    top = Path(top)
    if not top.is_dir():
        raise ImageError(f"{top}: refusing to dedup: not a directory")
    recover(top)
    chain = load_chain(top)
    result = DedupResult(str(top))
    if len(chain) < 2:
        return result
    for layer in chain:
        if layer.journal_pending:
            raise ImageError(f"{layer.path}: refusing to dedup: an interrupted zdtmpy rewrite "
                             "is pending; nothing was changed")
    for layer in chain[1:]:  # every refusal before the first rewrite
        load_checked(layer, "dedup")
    plans = _live_plans(chain)
    for layer, live in zip(chain[1:], plans):
        result.layers.append(_rewrite_layer(layer, live, in_place))
    return result


def _live_plans(chain: list[ImageSet]) -> list[LivePlan]:
    """For each parent layer: {pagemap key: live ranges}, from the top down."""
    need = {key: _ranges(pm.entries, PE_PARENT) for key, pm in chain[0].pagemaps.items()}
    plans: list[LivePlan] = []
    for layer in chain[1:]:
        live: LivePlan = {}
        deeper: LivePlan = {}
        for key, pm in layer.pagemaps.items():
            wanted = need.get(key, [])
            live[key] = _intersect(_ranges(pm.entries, None), wanted)
            deeper[key] = _intersect(_ranges(pm.entries, PE_PARENT), wanted)
        plans.append(live)
        need = deeper
    return plans


def _ranges(entries: Iterable[Entry], flag: int | None) -> Ranges:
    """Address ranges of the entries (with `flag` set, or all when flag is None), merged."""
    out: Ranges = []
    for e in entries:
        if flag is not None and not e.flags & flag:
            continue
        if out and out[-1][1] == e.vaddr:
            out[-1] = (out[-1][0], e.end)
        else:
            out.append((e.vaddr, e.end))
    return out


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out: Ranges = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _rewrite_layer(layer: ImageSet, live: LivePlan, in_place: bool) -> LayerDedup:
    path = layer.path
    pms = load_checked(layer, "dedup")
    spec = layer_spec(layer)
    before = allocated_bytes(path)
    stored_before = sum(e.nr_pages for pm in pms for e in pm.entries if e.present)
    stage = new_stage(path)
    names: list[str] = []
    kept = 0
    try:
        for pm in pms:
            ranges = live.get(pm.key, []) if pm.key is not None else []
            kept += _rewrite_pagemap(pm, ranges, stage, spec)
            names += [pm.pages_name, pm.name]
    except ImageError as exc:
        discard_stage(path)
        raise ImageError(f"{path}: dedup failed, this layer was not changed: {exc}") from None
    except BaseException:
        discard_stage(path)
        raise
    install(path, names, not in_place)
    return LayerDedup(str(path), stored_before, kept, before, allocated_bytes(path))


def _rewrite_pagemap(pm: Pagemap, live: Ranges, stage: Path, spec: Compression) -> int:
    """Write pm restricted to `live` into the stage; returns the present pages kept."""
    fd = open_regular(pm.pages_path) if os.path.lexists(pm.pages_path) else None
    kept = 0
    try:
        with PagemapWriter(stage, pm.name, pm.pages_id, spec, head_template=pm.head) as w:
            for e in pm.entries:
                runs = _intersect([(e.vaddr, e.end)], live)
                if not runs:
                    continue
                if not e.present:  # PE_PARENT (or lazy-only): no payload
                    for a, b in runs:
                        w.add(a, (b - a) // PAGE_SIZE, e.flags, b"", template=e.msg)
                    continue
                if fd is None:   # present pages with no pages file: verify refused it
                    raise ImageError(f"{pm.pages_path}: missing")
                if e.compressed and e.block_pages == 1 and spec.layout == "page":
                    _copy_page_blocks(fd, pm, e, runs, w)
                else:
                    _copy_decoded(fd, pm, e, runs, w)
                kept += sum((b - a) // PAGE_SIZE for a, b in runs)
    finally:
        if fd is not None:
            os.close(fd)
    return kept


def _copy_page_blocks(fd: int, pm: Pagemap, e: Entry, runs: Ranges, w: PagemapWriter) -> None:
    """Per-page LZ4: the live pages' stored blocks, copied without decoding a page."""
    offs = e.block_offsets
    sizes, offset = e.sizes or [], e.offset or 0   # a present compressed entry has both
    for a, b in runs:
        for p0 in range((a - e.vaddr) // PAGE_SIZE, (b - e.vaddr) // PAGE_SIZE,
                        MAX_PIECE // PAGE_SIZE):
            p1 = min(p0 + MAX_PIECE // PAGE_SIZE, (b - e.vaddr) // PAGE_SIZE)
            n = offs[p1] - offs[p0]
            blob = os.pread(fd, n, offset + offs[p0]) if n else b""
            if len(blob) != n:
                raise ImageError(f"{pm.pages_path}: short read in entry {e.index} of "
                                 f"{pm.name}")
            w.add_compressed(e.vaddr + p0 * PAGE_SIZE, p1 - p0, e.flags, sizes[p0:p1], blob)


def _copy_decoded(fd: int, pm: Pagemap, e: Entry, runs: Ranges, w: PagemapWriter) -> None:
    """Plain or region entries: decode once, write each live run (re-encoded by w)."""
    pieces: list[bytes] = []
    first = size = 0
    i, pos = 0, e.vaddr

    def flush() -> None:
        nonlocal pieces, size
        if pieces:
            w.add(first, size // PAGE_SIZE, e.flags, pieces, template=e.msg)
        pieces, size = [], 0

    for chunk in entry_chunks(fd, pm, e):
        c0, c1 = pos, pos + len(chunk)
        pos = c1
        while i < len(runs) and runs[i][0] < c1:
            a, b = runs[i]
            lo, hi = max(a, c0), min(b, c1)
            if lo < hi:
                if not pieces:
                    first = lo
                pieces.append(chunk[lo - c0:hi - c0])
                size += hi - lo
            if hi == b or size >= MAX_PIECE:
                flush()
            if b > c1:
                break  # the run goes on in the next chunk
            i += 1
    flush()
