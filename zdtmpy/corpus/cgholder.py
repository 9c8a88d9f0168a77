"""The named cgroup v1 hierarchies upstream's cgroup tests use, kept alive during a corpus
run by a holder cgroup of ours.

Why a holder: the kernel kills a v1 hierarchy when its last mount goes away while it has no
child cgroup. criu --manage-cgroups mounts and unmounts a test's hierarchies while it dumps;
with two dumps at once (two xdist workers), one unmount can kill the hierarchy the other
criu has just read from /proc/PID/cgroup, and that criu's mount then fails ('Unable to
create the cgroup (name=zdtmtst.defaultroot)', the kernel's 'No subsys list or none
specified'). A hierarchy that is already there needs the holder too: one whose last child
was removed just before its unmount stays listed in /proc/self/cgroup, unmounted and empty,
until the next unmount kills it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

HOLDER = "holder.zdtmpy"
TIMEOUT = 30.0
RETIRE_WAIT = 2.0  # the kernel frees a removed cgroup asynchronously

T = TypeVar("T")


def listed(name: str) -> bool:
    """Whether hierarchy `name` exists (alive or being freed) for this process."""
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return False
    return f"name={name}:" in text


def _cmd(args: list[str]) -> bool:
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def with_mount(name: str, action: Callable[[Path], T]) -> tuple[bool, T | None]:
    """Mount hierarchy `name` (created if missing) on a temp dir, run `action` on it, unmount:
    (mounted, what the action returned)."""
    tmp = tempfile.mkdtemp(prefix="zdtmpy-cg-")
    try:
        if not _cmd(["mount", "-t", "cgroup", "-o", f"none,name={name}", "zdtmpy", tmp]):
            return False, None
        try:
            return True, action(Path(tmp))
        finally:
            _cmd(["umount", "-l", tmp])
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(tmp)


def hold(name: str) -> tuple[bool, bool] | None:
    """Make sure hierarchy `name` has our holder: (we made the holder, we made the hierarchy),
    or None if it could not be mounted or the holder not made."""
    new = not listed(name)

    def make(root: Path) -> bool | None:
        try:
            (root / HOLDER).mkdir()
            return True
        except FileExistsError:
            return False
        except OSError:
            return None

    mounted, made = with_mount(name, make)
    if not mounted or made is None:
        return None
    return made, new and made


def release(name: str, retire: bool) -> str:
    """Remove our holder; if we made the hierarchy (`retire`), also let the kernel free it
    once nothing else holds it. What was done, as a line."""
    def drop(root: Path) -> bool:
        try:
            (root / HOLDER).rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False

    mounted, ok = with_mount(name, drop)
    if not (mounted and ok):
        return f"cgroup hierarchy name={name}: holder could not be removed"
    if retire and not _retire(name):
        return f"cgroup hierarchy name={name}: holder removed; the hierarchy is still in use"
    return f"cgroup hierarchy name={name}: holder removed" + (" (hierarchy gone)" if retire else "")


def _retire(name: str) -> bool:
    """Unmount-with-no-children until the kernel drops `name`; False if other cgroups keep it
    (someone else's: left as it is) or it outlives RETIRE_WAIT."""
    deadline = time.monotonic() + RETIRE_WAIT
    while listed(name):
        if time.monotonic() > deadline:
            return False
        mounted, empty = with_mount(
            name, lambda root: not any(p.is_dir() for p in root.iterdir()))
        if mounted and not empty:
            return False
        time.sleep(0.05)
    return True
