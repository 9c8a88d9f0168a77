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

Upstream's tests leave cgroups of their own: cgroupns moves itself into `zdtmtst/test` and
its rmdir of it fails while it is still inside, so `test` stays, empty, keeping the hierarchy
alive after the run. The last session out removes such empty cgroups (not those found there
when the first session came, nor another runner's `holder.*`) with its holder.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

HOLDER = "holder.zdtmpy"
OTHER_HOLDERS = "holder."  # zdtm.py's holder.<uuid>: another runner's, alive or not
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


def children(name: str) -> list[str]:
    """The cgroups under hierarchy `name` (paths relative to its root), if it exists."""
    if not listed(name):
        return []

    def walk(root: Path) -> list[str]:
        return sorted(str(Path(d).relative_to(root)) for d, _, _ in os.walk(root)
                      if d != str(root))

    return with_mount(name, walk)[1] or []


def release(name: str, retire: bool, found: Collection[str] | None = ()) -> str:
    """Remove our holder, and the empty cgroups upstream's tests left (not those `found`
    when the first session came, nor another runner's holder; none if `found` is None:
    unknown); if we made the hierarchy (`retire`), also let the kernel free it once nothing
    else holds it. What was done, as a line."""
    left: list[str] = []

    def drop(root: Path) -> bool:
        try:
            (root / HOLDER).rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return False
        if found is None:
            return True
        for d, _, _ in os.walk(root, topdown=False):   # the deepest first
            rel = os.path.relpath(d, root)
            if d == str(root) or rel in found or rel.split("/")[0].startswith(OTHER_HOLDERS):
                continue
            with contextlib.suppress(OSError):   # busy: someone's processes are in it
                os.rmdir(d)
                left.append(rel)
        return True

    mounted, ok = with_mount(name, drop)
    if not (mounted and ok):
        return f"cgroup hierarchy name={name}: holder could not be removed"
    what = f"cgroup hierarchy name={name}: holder removed"
    if left:
        what += f", and {len(left)} empty cgroup(s) upstream's tests left ({', '.join(left)})"
    if retire and not _retire(name):
        return f"{what}; the hierarchy is still in use"
    return what + (" (hierarchy gone)" if retire else "")


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
