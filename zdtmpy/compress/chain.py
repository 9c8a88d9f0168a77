"""Checks that span a parent chain: links, process tree, version rule, PE_PARENT coverage.

verify_dir(path, chain=True) checks each layer's own format; verify_chain adds what only the
chain as a whole can get wrong. Nothing here raises for a broken chain: every problem comes
back as a Problem naming the layer, the file and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ImageError
from ..images.imageset import INVENTORY, PARENT_LINK, ImageSet, load_chain
from ..images.pagemap import PAGE_SIZE, PE_PARENT, PE_PRESENT, Pagemap, PagemapKey
from ..images.reader import PageReader
from .verify import Problem, verify_dir

PROT_EXEC = 4
COMPARE_PAGES = 1024  # pages compared per read in same_content

Range = tuple[int, int]   # [start, stop) addresses
StrPath = str | os.PathLike[str]


def verify_chain(path: StrPath, full: bool = True) -> list[Problem]:
    """verify_dir(path, chain=full) plus chain_problems(path), without duplicates: the
    layer's own invariants, its links, tree and version rule against its parents, and (with
    full) every parent layer's own invariants too."""
    out = list(verify_dir(path, chain=full))
    seen = {str(p) for p in out}
    for p in chain_problems(path):
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def chain_problems(path: StrPath) -> list[Problem]:
    """Problems of the chain starting at `path` ([] when it is a sound chain)."""
    path = Path(path)
    try:
        ImageSet(path)
        layers = load_chain(path)
    except ImageError as exc:
        return [Problem(str(path), PARENT_LINK, None, str(exc))]
    problems: list[Problem] = []
    for i, layer in enumerate(layers):
        parent = layers[i + 1] if i + 1 < len(layers) else None
        if parent is not None:
            why = same_tree_problem(layer, parent)
            if why:
                problems.append(Problem(str(layer.path), PARENT_LINK, None,
                                        f"parent {parent.path} belongs to another process "
                                        f"tree: {why}"))
        if layer.img_version != 3 and any(p.img_version == 3 for p in layers[i + 1:]):
            problems.append(Problem(str(layer.path), INVENTORY, None,
                                    f"img_version {layer.img_version}, but a parent layer is "
                                    "version 3: a layer above a version-3 layer must be 3"))
        problems.extend(_parent_coverage(layer, parent))
    return problems


def _parent_coverage(layer: ImageSet, parent: ImageSet | None) -> list[Problem]:
    """Each PE_PARENT range of `layer` must be served by the parent's own entries (present,
    or PE_PARENT again: those are checked one level down)."""
    out: list[Problem] = []
    try:
        pms = layer.pagemaps
        ppms: dict[PagemapKey, Pagemap] = parent.pagemaps if parent is not None else {}
    except ImageError as exc:
        return [Problem(str(layer.path), INVENTORY, None, f"cannot load pagemaps: {exc}")]
    for key, pm in pms.items():
        ppm = ppms.get(key)
        for e in pm.entries:
            if not e.flags & PE_PARENT:
                continue
            if parent is None:
                out.append(Problem(str(layer.path), pm.name, e.index,
                                   f"PE_PARENT at {e.vaddr:#x} but the layer has no parent "
                                   "link"))
                continue
            gap = first_gap(ppm, e.vaddr, e.end)
            if gap is not None:
                where = f"{parent.path}/{pm.name}" if ppm is not None else \
                    f"{parent.path} (no {pm.name})"
                out.append(Problem(str(layer.path), pm.name, e.index,
                                   f"PE_PARENT pages {gap[0]:#x}-{gap[1]:#x} are not in the "
                                   f"parent layer {where}"))
    return out


def first_gap(ppm: Pagemap | None, start: int, stop: int) -> Range | None:
    """First sub-range of [start, stop) no present/PE_PARENT entry of ppm covers, or None."""
    if ppm is None:
        return (start, stop)
    pos = start
    while pos < stop:
        e = ppm.find(pos)
        if e is None or not e.flags & (PE_PRESENT | PE_PARENT):
            if e is not None:
                return (pos, min(stop, e.end))
            nxt = ppm.next_start(pos)
            return (pos, stop if nxt is None else min(stop, nxt))
        pos = e.end
    return None


def same_tree_problem(layer: ImageSet, parent: ImageSet) -> str | None:
    """Why `parent` cannot be a dump of the same process tree as `layer`, or None.

    The pstree (pid, ppid) must match. When both layers hold mm images, each process must
    still have at least one executable mapping at the same place: address-space layout
    randomisation makes that differ between two runs of even the same program."""
    try:
        mine, theirs = layer.pstree(), parent.pstree()
    except ImageError as exc:
        return f"cannot read pstree.img: {exc}"
    if mine is None or theirs is None:
        return None  # a pre-dump layer may carry no pstree: nothing to compare
    a = sorted((e.pid, e.ppid) for e in mine)
    b = sorted((e.pid, e.ppid) for e in theirs)
    if a != b:
        return f"pstree (pid, ppid) {a} vs {b}"
    for pid, _ in a:
        x, y = _exec_vmas(layer, pid), _exec_vmas(parent, pid)
        if x is not None and y is not None and x and y and not x & y:
            return (f"pid {pid} has no executable mapping in common (e.g. {min(x)[0]:#x} vs "
                    f"{min(y)[0]:#x}): another run of the program")
    return None


def _exec_vmas(layer: ImageSet, pid: int) -> set[Range] | None:
    if not (layer.path / f"mm-{pid}.img").exists():
        return None
    try:
        return {(v.start, v.end) for v in layer.mm(pid).vmas if v.prot & PROT_EXEC}
    except ImageError:
        return None


def same_content(full: StrPath, layered: StrPath, limit: int = 10) -> list[str]:
    """What differs between a full dump and a layer read through its chain: the layer must
    cover exactly the full dump's present pages and give the same bytes for every one.
    Returns readable lines, [] when equal. Reads in chunks of COMPARE_PAGES pages."""
    out: list[str] = []
    try:
        top = ImageSet(full)
        with PageReader(full) as a, PageReader(layered) as b:
            other = b.layers[0].pagemaps
            for key, pm in top.pagemaps.items():
                opm = other.get(key)
                mine = _ranges(pm, PE_PRESENT)
                theirs = _ranges(opm, PE_PRESENT | PE_PARENT) if opm is not None else []
                if mine != theirs:
                    out.append(f"{layered}/{pm.name}: covers {_fmt(theirs)}, the full dump "
                               f"{full} covers {_fmt(mine)}")
                    continue
                for start, stop in mine:
                    for pos in range(start, stop, COMPARE_PAGES * PAGE_SIZE):
                        n = min(COMPARE_PAGES, (stop - pos) // PAGE_SIZE)
                        x, y = a.read(key, pos, n), b.read(key, pos, n)
                        if x != y:
                            bad = next(i for i in range(n) if x[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
                                       != y[i * PAGE_SIZE:(i + 1) * PAGE_SIZE])
                            addr = pos + bad * PAGE_SIZE
                            out.append(f"{_owner(key)} page {addr:#x}: {layered}/{pm.name} "
                                       f"differs from the full dump; {_stored(b, key, addr)}")
                            break
                    if len(out) >= limit:
                        return out
            extra = sorted(set(other) - set(top.pagemaps), key=str)
            if extra:
                out.append(f"{layered}: pagemaps {extra} are not in the full dump {full}")
    except ImageError as exc:
        out.append(str(exc))
    return out


def _owner(key: PagemapKey) -> str:
    return f"shmem {key[1]:#x}" if isinstance(key, tuple) else f"pid {key}"


def _stored(reader: PageReader, key: PagemapKey, addr: int) -> str:
    """Where the layered read found the page, as the oracle says it."""
    try:
        loc = reader.locate(key, addr)
    except ImageError as exc:
        return f"(cannot locate: {exc})"
    if loc is None:
        return "not in any pagemap"
    return (f"stored in layer {loc.layer_dir}, {loc.pagemap_file} entry {loc.entry_index} "
            f"block {loc.block_index}")


def _ranges(pm: Pagemap, flags: int) -> list[Range]:
    out: list[Range] = []
    for e in pm.entries:
        if e.flags & flags:
            if out and out[-1][1] == e.vaddr:
                out[-1] = (out[-1][0], e.end)
            else:
                out.append((e.vaddr, e.end))
    return out


def _fmt(ranges: list[Range], n: int = 3) -> str:
    text = ", ".join(f"{a:#x}-{b:#x}" for a, b in ranges[:n])
    return text + (f" ... ({len(ranges)} ranges)" if len(ranges) > n else "")
