"""What restore puts in the pages of a private file mapping that the images do not hold.

criu dumps only the pages a process changed (anonymous copies); an untouched page of a
MAP_PRIVATE file mapping comes back from the file itself, at the mapping's offset (zeros past
the file's end). A reader that took such a hole for zeros would accept a set whose restore
shows other bytes: `private_file_source()` gives the bytes restore would see instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ImageError
from . import messages
from .framing import FILES_MAGIC, read_image
from .safeopen import open_regular

VMA_AREA_REGULAR = 1 << 0
VMA_FILE_PRIVATE = 1 << 6
VMA_AREA_MEMFD = 1 << 14
MAX_NAME = 4096  # PATH_MAX: a longer name in files.img is not a path criu could open


@functools.lru_cache(maxsize=64)
def _reg_names(layer_dir: str) -> dict[int, str]:
    """file id -> path of every regular file of one layer's files.img."""
    d = Path(layer_dir)
    if not (d / "files.img").exists():
        return {}
    out = {}
    for i, raw in enumerate(read_image(d / "files.img", FILES_MAGIC).entries):
        f = messages.decode(messages.FileEntry, raw, f"{d}/files.img entry {i}")
        if f.HasField("reg"):
            name = f.reg.name
            if not name or len(name) > MAX_NAME or "\0" in name:
                raise ImageError(f"{d}/files.img entry {i}: file id {f.id} has an unusable "
                                 f"name {name[:80]!r}")
            out[f.id] = name if name.startswith("/") else "/" + name
    return out


def is_private_file(vma: Any) -> bool:
    return bool(vma.status & VMA_FILE_PRIVATE) and not vma.status & VMA_AREA_MEMFD


def private_file_source(layer_dir: str | os.PathLike[str],
                        vma: Any) -> Callable[[int, int], bytes] | None:
    """For a private file mapping, a function (start, stop) -> the file's bytes that restore
    maps at [start, stop) of the VMA; None for any other mapping."""
    if not is_private_file(vma):
        return None
    path = _reg_names(str(layer_dir)).get(vma.shmid)
    if path is None:
        raise ImageError(f"{layer_dir}: private file mapping {vma.start:#x}-{vma.end:#x} "
                         f"names file id {vma.shmid}, which files.img does not list")

    def read(start: int, stop: int) -> bytes:
        if not vma.start <= start <= stop <= vma.end:
            raise ImageError(f"{path}: {start:#x}-{stop:#x} is outside its mapping "
                             f"{vma.start:#x}-{vma.end:#x}")
        fd = open_regular(path)
        try:
            data = os.pread(fd, stop - start, vma.pgoff + start - vma.start)
        finally:
            os.close(fd)
        return data.ljust(stop - start, b"\0")  # past the end of the file: zeros

    return read
