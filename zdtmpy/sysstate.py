"""System-wide state a session may change, put back at its end.

Sysctls zdtmpy raises (fs.pipe-max-size, for remote lazy pages; vm.nr_hugepages is left to
corpus/sysprep.py): the process that raises one first records the value it found in the
machine's session registry (`remember`), and the last session out writes it back
(`put_back_sysctls`), so two sessions never undo what the other still needs. cgroup v1
hierarchies that appeared during the session (upstream's named `zdtmtst*` ones) are emptied
and unmounted (Snapshot). Called by the process that owns the session (the xdist controller,
or the only process), after failures too. Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import Registry

# sysctl -> the value zdtmpy (or the corpus) sets it to. Only a sysctl that now holds exactly
# that value is put back: several sessions share this machine, and a value someone else set
# (or already put back) is not ours to change.
SYSCTLS = {
    "fs/pipe-max-size": "4194304",  # cycle/lazy.py, for criu's remote lazy pages
    # corpus uns x lazy: with 0 the kernel refuses the restored tasks' userfaultfd inside
    # their user namespace (EPERM), so every such item would fail for that alone
    "vm/unprivileged_userfaultfd": "1",
}
# Only upstream's own named hierarchies: other cgroup mounts may belong to someone else.
CGROUP_NAME = "name=zdtmtst"
UMOUNT_TIMEOUT = 30


PROC_SYS = Path("/proc/sys")


def _read(base: Path, name: str) -> str | None:
    try:
        return (base / name).read_text().strip()
    except OSError:
        return None


def _cgroup_mounts() -> dict[str, str]:
    """{mount point: super options} of cgroup (v1) mounts in our mount namespace."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 3 and fields[0] == "cgroup":
            out[left.split()[4]] = fields[2]
    return out


@dataclass
class Snapshot:
    sysctls: dict[str, str] = field(default_factory=dict)
    cgroups: dict[str, str] = field(default_factory=dict)
    proc_sys: Path = PROC_SYS
    ours: dict[str, str] = field(default_factory=lambda: dict(SYSCTLS))

    @classmethod
    def take(cls, proc_sys: Path = PROC_SYS, ours: dict[str, str] | None = None) -> Snapshot:
        ours = SYSCTLS if ours is None else ours
        values = {n: v for n in ours if (v := _read(proc_sys, n)) is not None}
        return cls(values, _cgroup_mounts(), proc_sys, dict(ours))

    def restore(self, cgroups: bool = True) -> list[str]:
        """Put back what changed; returns one line per change made or failed."""
        done = []
        for name, value in self.sysctls.items():
            now = _read(self.proc_sys, name)
            if now is None or now == value or now != self.ours.get(name):
                continue  # unchanged, or changed by someone else
            try:
                (self.proc_sys / name).write_text(value)
                done.append(f"sysctl {name.replace('/', '.')}: {now} -> {value} (restored)")
            except OSError as exc:
                done.append(f"sysctl {name.replace('/', '.')}: {now}, could not restore "
                            f"{value}: {exc.strerror}")
        for mnt, opts in _cgroup_mounts().items() if cgroups else ():
            if mnt in self.cgroups or CGROUP_NAME not in opts:
                continue
            done.append(_drop_cgroup(mnt, opts))
        return done


def _drop_cgroup(mnt: str, opts: str) -> str:
    """Remove the child cgroups of a hierarchy mounted during the session, then unmount."""
    for dirpath, _dirs, _files in sorted(os.walk(mnt, topdown=False), reverse=True):
        if dirpath != mnt:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
    try:
        r = subprocess.run(["umount", mnt], capture_output=True, text=True,
                           timeout=UMOUNT_TIMEOUT)
        ok = r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return f"cgroup hierarchy {opts} at {mnt}: " + ("unmounted" if ok else "could not unmount")


def remember(name: str, found: str, registry: Registry | None = None) -> None:
    """Before raising sysctl `name` (e.g. "fs/pipe-max-size"): record the value found,
    unless a live session recorded one first (that one is the original)."""
    with (registry or Registry()).locked() as shared:
        sysctls = shared.state.setdefault("sysctls", {})
        if isinstance(sysctls, dict):
            sysctls.setdefault(name, found)


def put_back_sysctls(state: dict[str, Any], proc_sys: Path = PROC_SYS) -> list[str]:
    """The last session out: write the recorded originals back where a sysctl still holds
    the value zdtmpy set (another value is someone else's); one line per change."""
    done = []
    recorded = state.pop("sysctls", {})
    for name, value in recorded.items() if isinstance(recorded, dict) else ():
        now = _read(proc_sys, name)
        if name not in SYSCTLS or now is None or now == value or now != SYSCTLS[name]:
            continue
        try:
            (proc_sys / name).write_text(str(value))
            done.append(f"sysctl {name.replace('/', '.')}: {now} -> {value} (restored)")
        except OSError as exc:
            done.append(f"sysctl {name.replace('/', '.')}: {now}, could not restore "
                        f"{value}: {exc.strerror}")
    return done


def ensure(name: str, proc_sys: Path = PROC_SYS, registry: Registry | None = None) -> str | None:
    """Set sysctl `name` to zdtmpy's value (SYSCTLS) unless it holds it; the value found is
    recorded first (remember) for the last session out. Returns the value found when it
    was changed, else None. OSError when it cannot be read, recorded or written."""
    wanted = SYSCTLS[name]
    found = (proc_sys / name).read_text().strip()
    if found == wanted:
        return None
    remember(name, found, registry)
    (proc_sys / name).write_text(wanted)
    return found
