"""The page-content oracle: what the images hold against what the workload wrote.

Every page of every manifest region is read back from the images (through the compression
layer, following parent links) and compared with the page the manifest's generator gives.
A page the images lack is what restore would map there: zeros for anonymous memory, the
file's bytes for a private file mapping.
It does not trust the workload's own check: a page criu dropped or a block the layer
garbled fails here even if the restored process never touches it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .images.pagemap import PagemapKey
    from .images.reader import PageReader
    from .workload import Manifest

# Regions are read in chunks so a large one never needs its whole size in memory twice.
CHUNK_PAGES = 1024
PAGE = 4096


def check(images: Path, manifest: Manifest, limit: int = 10) -> list[str]:
    """Mismatches as readable lines (pid, address, layer, block); empty when all match."""
    from .errors import ImageError
    from .images import PageReader

    try:
        reader = PageReader(images)
    except ImageError as exc:
        return [str(exc)]
    with reader:
        return _compare(reader, manifest, limit)


def _compare(reader: PageReader, manifest: Manifest, limit: int) -> list[str]:
    from . import pagegen
    from .errors import ImageError

    problems: list[str] = []
    # one buffer for every chunk: read_into fills it in place (no fresh pages to fault in)
    chunk = memoryview(bytearray(CHUNK_PAGES * PAGE))
    for region in manifest.regions:
        done = 0
        while done < region.pages and len(problems) < limit:
            vaddr = region.start + done * PAGE
            try:
                # Shared memory lives in shmem objects, not in the process's own pagemap.
                key, addr, in_mapping = reader.resolve(region.pid, vaddr)
                n = min(CHUNK_PAGES, region.pages - done, in_mapping)
                if key is None:  # a shared file mapping: its pages are in the file
                    done += n
                    continue
                data = chunk[:n * PAGE]
                reader.read_into(key, addr, data, missing=_hole_source(reader, key, addr))
            except ImageError as exc:
                problems.append(f"pid {region.pid} region {region.label} at {vaddr:#x}: {exc}")
                break
            bad = pagegen.first_mismatch(region.gen, region.seed, region.index + done, n, data)
            if bad < 0:
                done += n
                continue
            problems.append(
                f"pid {region.pid} page {vaddr + bad * PAGE:#x} (region {region.label}, "
                f"{region.gen} seed {region.seed}): content differs from the manifest; "
                f"{_where(reader, key, addr + bad * PAGE)}"
            )
            done += bad + 1
    return problems


def _hole_source(reader: PageReader, key: PagemapKey,
                 addr: int) -> str | Callable[[int, int], bytes]:
    """What restore shows in pages the images lack: a private file mapping's file bytes,
    else zeros (anonymous memory; shmem objects)."""
    from .images.filemap import private_file_source

    if isinstance(key, tuple):
        return "zero"
    return private_file_source(reader.layers[0].path, reader.vma_at(key, addr)) or "zero"


def _where(reader: PageReader, key: PagemapKey, addr: int) -> str:
    try:
        loc = reader.locate(key, addr)
    except Exception as exc:  # a locate failure must not hide the mismatch itself
        return f"(cannot locate: {exc})"
    if loc is None:
        return "not in any pagemap"
    return (f"stored in layer {loc.layer_dir}, {loc.pagemap_file} entry {loc.entry_index} "
            f"block {loc.block_index}")
