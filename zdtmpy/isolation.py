"""Process isolation and cleanup helpers.

Each workload runs as PID 1 of its own PID namespace (the C launcher creates it), and criu
restores such a tree into a fresh namespace, so parallel tests never compete for the PIDs a
restore must reuse. The runner makes itself a child subreaper: a restored tree (whose
parent, criu, exits) is reparented to us, and we reap it at once instead of waiting for the
host's init, which reaps only every second or two here.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants. False if refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def alive(pid: int) -> bool:
    """True while /proc/PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until PID is reaped (our child) or gone from /proc (not ours)."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}"):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def kill_and_reap(pid: int, timeout: float = 10.0) -> bool:
    """SIGKILL PID (for a namespace init: the whole namespace) and wait for it."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    return wait_gone(pid, timeout)


def reap_orphans() -> list[int]:
    """Reap every exited child. Call only when no subprocess.Popen of ours is pending."""
    reaped = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)


def tree_pids(root: int) -> list[int]:
    """Host pids of ROOT and all its descendants (via /proc/PID/task/*/children)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


@contextmanager
def exclusive_lock(lock_file: Path, exclusive: bool):
    """Shared for ordinary tests, exclusive for `excl` ones, across xdist workers."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
