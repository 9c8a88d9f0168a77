"""The visible state of a process tree: its mappings and file descriptors.

Captured before the dump and after the restore, keyed by the pid inside the test's PID
namespace (host pids differ after a restore), and compared.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from .isolation import ns_pid, tree_pids

# Kernel-provided mappings whose placement or presence criu does not promise to keep.
_VOLATILE = {"[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]", "[uprobes]"}
# pipe:[12345] / socket:[...] / anon_inode:[...]: the inode number changes on restore.
_INODE = re.compile(r"^(\w+):\[\d+\]$")
# criu restores a shared anonymous mapping through a memfd: same memory, another name.
_SHMEM_ALIASES = {"/memfd:/dev/zero (deleted)": "/dev/zero (deleted)"}


Mapping = tuple[int, int, str, int, str]   # (start, end, perms, offset, path)
FdEntry = tuple[int, str]                  # (fd, target)
# (root, mount point, options, shared, master) of a mountinfo line: what upstream compares
MountEntry = tuple[str, str, str, bool, bool]


@dataclass(frozen=True)
class ProcState:
    nspid: int
    maps: tuple[Mapping, ...]
    fds: tuple[FdEntry, ...]
    mounts: tuple[MountEntry, ...] = ()   # captured on request (capture(mounts=True))


def _maps(hostpid: int) -> tuple[Mapping, ...]:
    out = []
    with open(f"/proc/{hostpid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) > 5 else ""
            path = _SHMEM_ALIASES.get(path, path)
            if path in _VOLATILE:
                continue
            start, end = parts[0].split("-")
            out.append((int(start, 16), int(end, 16), parts[1], int(parts[2], 16), path))
    return tuple(out)


def _fds(hostpid: int) -> tuple[FdEntry, ...]:
    out = []
    base = f"/proc/{hostpid}/fd"
    for name in sorted(os.listdir(base), key=int):
        try:
            target = os.readlink(f"{base}/{name}")
        except FileNotFoundError:
            continue
        out.append((int(name), _INODE.sub(r"\1:[]", target)))
    return tuple(out)


def _mounts(hostpid: int) -> tuple[MountEntry, ...]:
    """The process's mount table without ids (they change on restore). As upstream's
    zdtm.py reads it, a propagation flag counts only as the first optional field."""
    out = []
    try:
        f = open(f"/proc/{hostpid}/mountinfo")
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a zombie has no mount table (zdtm.py: none either)
            return ()
        raise
    with f:
        for line in f:
            fields = line.split(" - ", 1)[0].split()
            if len(fields) < 6:
                continue
            first = fields[6] if len(fields) > 6 else ""
            out.append((fields[3], fields[4], fields[5], first.startswith("shared:"),
                        first.startswith("master:")))
    return tuple(sorted(out))


def capture(root_hostpid: int, mounts: bool = False) -> dict[int, ProcState]:
    """Every process of the tree, keyed by its pid in its PID namespace; with `mounts`,
    each one's mount table too."""
    state = {}
    for pid in tree_pids(root_hostpid):
        try:
            ns = ns_pid(pid)
            state[ns] = ProcState(ns, _maps(pid), _fds(pid), _mounts(pid) if mounts else ())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked: the comparison will show it missing
    return state


def _merge(maps: tuple[Mapping, ...]) -> list[Mapping]:
    """Join adjacent mappings with equal attributes: the kernel may split or merge VMAs."""
    out: list[Mapping] = []
    for m in maps:
        if out and out[-1][1] == m[0] and out[-1][2] == m[2] and out[-1][4] == m[4]:
            prev = out[-1]
            out[-1] = (prev[0], m[1], prev[2], prev[3], prev[4])
        else:
            out.append(m)
    return out


def per_pid(before: dict[int, ProcState], after: dict[int, ProcState],
            compare: Callable[[int, ProcState, ProcState], list[str]]) -> list[str]:
    """Walk both trees by pid: a pid on one side only is a difference; `compare` tells the
    differences of a pid on both sides (one rule set per caller, the walk shared)."""
    diffs: list[str] = []
    for pid in sorted(set(before) | set(after)):
        if pid not in after:
            diffs.append(f"pid {pid}: missing after restore")
        elif pid not in before:
            diffs.append(f"pid {pid}: not in the tree before the dump")
        else:
            diffs.extend(compare(pid, before[pid], after[pid]))
    return diffs


def differences(before: dict[int, ProcState], after: dict[int, ProcState],
                limit: int = 10) -> list[str]:
    """Human-readable differences; empty when the trees match."""
    def compare(pid: int, b_state: ProcState, a_state: ProcState) -> list[str]:
        diffs = []
        b, a = _merge(b_state.maps), _merge(a_state.maps)
        if b != a:
            for m in [m for m in b if m not in a][:limit]:
                diffs.append(f"pid {pid}: mapping {_fmt(m)} lost")
            for m in [m for m in a if m not in b][:limit]:
                diffs.append(f"pid {pid}: mapping {_fmt(m)} appeared")
        if b_state.fds != a_state.fds:
            diffs.append(f"pid {pid}: fds {b_state.fds} became {a_state.fds}")
        return diffs

    return per_pid(before, after, compare)


def _fmt(m: Mapping) -> str:
    return f"{m[0]:x}-{m[1]:x} {m[2]} {m[4] or '[anon]'}"
