"""Empty directories upstream's tests leave in the host's /tmp, removed by the last session out.

mnt_ext_auto and mnt_ext_multiple make `/tmp/zdtm_ext_auto.XXXXXX` and
`/tmp/zdtm_ext_multiple.tmp` (fixed paths, in the host's filesystem) and mount a tmpfs there
before they enter namespaces of their own; the mount goes with the item's mount namespace
(mntns.py), the directory stays. Only the last corpus session out removes them (another
session's test may be between its mkdir and its mount), only those that were not there when
the first session came, and only with rmdir: a directory that holds anything, or is a mount
point, or is not a directory, stays.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path

TMP = Path("/tmp")
PREFIX = "zdtm_"   # upstream's naming; zdtmpy's own are zdtmpy-*


def found(base: Path | None = None) -> list[str]:
    """The names of upstream-named entries in /tmp now."""
    try:
        return sorted(e.name for e in os.scandir(base or TMP) if e.name.startswith(PREFIX))
    except OSError:
        return []


def remove_new(before: Collection[str] | None, base: Path | None = None) -> list[str]:
    """rmdir the empty upstream-named directories that are not in `before`; one line saying
    what was removed. None: no record of what was there (remove nothing)."""
    if before is None:
        return []
    root = base or TMP
    removed = []
    for name in found(root):
        if name in before:
            continue
        path = root / name
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode) or os.path.ismount(path):
                continue
            os.rmdir(path)   # refuses a directory that holds anything
        except OSError:
            continue
        removed.append(name)
    if not removed:
        return []
    return [f"{len(removed)} empty dir(s) upstream's tests left in {root} removed "
            f"({', '.join(removed)})"]


def record(state_value: object) -> set[str] | None:
    """The recorded names, where the record has the right shape (else None)."""
    if not isinstance(state_value, list) or not all(isinstance(n, str) for n in state_value):
        return None
    return set(state_value)
