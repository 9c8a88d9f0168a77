"""Names in an image directory that criu would misread: problems verify reports per file."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from .imageset import PARENT_LINK
from .pagemap import LOOSE_NAME, Pagemap, pagemap_key, pagemap_name
from .safeopen import file_kind

PAGES_NAME = re.compile(r"pages-(\d+)\.img")


def directory_problems(path: Path, pagemaps: Iterable[Pagemap] | None) -> list[tuple[str, str]]:
    """(file name, problem) for every image file criu could not use as zdtmpy reads it.

    pagemaps: the layer's loaded pagemaps, or None when they could not be loaded (then
    orphan pages files are not judged).
    """
    out: list[tuple[str, str]] = []
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        return [(".", f"cannot list the directory: {exc.strerror}")]
    for name in names:
        if name == PARENT_LINK or not (name.endswith(".img") or name.startswith("stats-")):
            continue
        try:
            mode = os.lstat(path / name).st_mode
        except OSError as exc:
            out.append((name, f"cannot inspect: {exc.strerror}"))
            continue
        if not stat.S_ISREG(mode):
            out.append((name, f"is {file_kind(mode)}; image files must be regular files"))
        if LOOSE_NAME.fullmatch(name) and pagemap_key(name) is None:
            digits = re.sub(r"\D", "", name)
            key = int(digits)
            want = pagemap_name(("shmem", key) if "shmem" in name else key)
            out.append((name, f"not a name criu writes or reads (it would open {want}); "
                        "a second spelling of one id"))
    if pagemaps is not None:
        used = {pm.pages_id for pm in pagemaps}
        for name in names:
            m = PAGES_NAME.fullmatch(name)
            if m and int(m.group(1)) not in used:
                out.append((name, "orphan pages file: no pagemap of this layer names "
                            f"pages_id {m.group(1)} (was its pagemap deleted?)"))
    return out
