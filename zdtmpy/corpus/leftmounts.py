"""Mounts upstream tests left in the host's mount table, found and removed at a session's end.

Tests and hooks run in a private mount namespace (mntns.py), so nothing they mount should
reach the host. Should something still appear (a test started some other way, an older
zdtmpy), the last corpus session out removes what appeared while it ran and is upstream's
by its source name: upstream's tests and hooks name what they mount `zdtm_*`
(`zdtm_auto_ext_mnt`, `zdtm_yard`, ...) or mount it under /tmp/zdtm_*.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 30


@dataclass(frozen=True)
class Mount:
    mount_id: int
    point: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def table(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Mount]:
    """The mounts of this process's mount namespace (empty if it cannot be read)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 2 or not fields[0].isdigit():
            continue
        out.append(Mount(int(fields[0]), _unescape(fields[4]), _unescape(rest[1])))
    return out


def upstreams(mount: Mount) -> bool:
    """Upstream's naming; never zdtmpy's own (`zdtmpy-*`, /tmp/zdtmpy-ns-*)."""
    return mount.source.startswith("zdtm_") or mount.point.startswith("/tmp/zdtm_")


def remove_new(before: set[int], mounts: list[Mount] | None = None) -> list[str]:
    """Lazily unmount upstream's mounts that are not in `before` (mount ids), deepest first;
    returns one line per mount removed or not."""
    found = [m for m in (table() if mounts is None else mounts)
             if m.mount_id not in before and upstreams(m)]
    out = []
    for m in sorted(found, key=lambda m: m.point.count("/"), reverse=True):
        try:
            r = subprocess.run(["umount", "-l", m.point], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=TIMEOUT)
            ok, why = r.returncode == 0, (r.stderr or "").strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why = False, str(exc)
        out.append(f"mount {m.source} on {m.point} left by a test: "
                   + ("unmounted" if ok else f"could not be unmounted: {why}"))
    return out
