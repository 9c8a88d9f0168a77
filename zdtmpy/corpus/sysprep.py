"""What upstream's runner sets up for the whole run, done once per session and undone at its
end (the controller process does both; `sysstate` puts sysctls back even after failures).

* vm.nr_hugepages = 20 (upstream's hugetlb tests need pages to map);
* the named cgroup v1 hierarchies `zdtmtst` and `zdtmtst.defaultroot`, each kept alive by a
  holder cgroup, so criu never sees a controller appear in the middle of a dump.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

HUGEPAGES = 20
HIERARCHIES = ("zdtmtst", "zdtmtst.defaultroot")
TIMEOUT = 30


def _cmd(args: list[str]) -> bool:
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _hierarchy_exists(name: str) -> bool:
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return False
    return f"name={name}:" in text


def _with_mount(name: str, action) -> bool:
    tmp = tempfile.mkdtemp(prefix="zdtmpy-cg-")
    try:
        if not _cmd(["mount", "-t", "cgroup", "-o", f"none,name={name}", "zdtmpy", tmp]):
            return False
        try:
            action(Path(tmp))
        finally:
            _cmd(["umount", "-l", tmp])
        return True
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(tmp)


class Prepared:
    """What this session set up, to undo exactly that."""

    def __init__(self) -> None:
        self.holders: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def setup(self) -> None:
        path = Path("/proc/sys/vm/nr_hugepages")
        try:
            if int(path.read_text()) < HUGEPAGES:
                path.write_text(str(HUGEPAGES))
                self.notes.append(f"vm.nr_hugepages raised to {HUGEPAGES} for this session")
        except (OSError, ValueError):
            self.notes.append("vm.nr_hugepages could not be raised: hugetlb tests may fail")
        holder = f"holder.zdtmpy-{os.getpid()}"
        for name in HIERARCHIES:
            if _hierarchy_exists(name):
                continue
            if _with_mount(name, lambda root: (root / holder).mkdir(exist_ok=True)):
                self.holders.append((name, holder))
            else:
                self.notes.append(f"cgroup hierarchy name={name} could not be created")

    def undo(self) -> list[str]:
        """Remove the holders (the kernel then drops the hierarchies); sysctls: sysstate."""
        out = []
        for name, holder in self.holders:
            def drop(root: Path, holder=holder) -> None:
                with contextlib.suppress(OSError):
                    (root / holder).rmdir()
            ok = _with_mount(name, drop)
            out.append(f"cgroup hierarchy name={name}: holder "
                       + ("removed" if ok else "could not be removed"))
        self.holders = []
        return out
