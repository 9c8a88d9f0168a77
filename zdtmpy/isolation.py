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
import math
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants. False if refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def alive(pid: int) -> bool:
    """True while /proc/PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def status_text(status: int) -> str:
    """A wait status as a user reads it: "was killed by SIGKILL", "exited with status 1"."""
    if os.WIFSIGNALED(status):
        signo = os.WTERMSIG(status)
        try:
            name = signal.Signals(signo).name
        except ValueError:
            name = f"signal {signo}"
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def death(pid: int) -> str | None:
    """None while PID lives; else how it ended (reaped here when it is our child)."""
    if alive(pid):
        return None
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "exited (status unknown: not our child)"
    if done != pid:  # exiting, not yet a zombie
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return "exited (status unknown)"
    return status_text(status)


def wait_exit(pid: int, timeout: float) -> bool:
    """Block until PID has exited (a zombie counts; nothing is reaped): True, or False after
    `timeout`. Woken by the kernel through a pidfd, so an exit is seen at once, without
    polling; where pidfds are missing, polls /proc."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd here (ENOSYS, a seccomp filter): look every few ms
        return _poll_exit(pid, timeout)
    try:
        return _wait_fd(fd, timeout)
    finally:
        os.close(fd)


def _wait_fd(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, math.ceil(timeout * 1000))))  # PEP 475: retried on EINTR


def _poll_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


def wait_status(pid: int, timeout: float) -> int | None:
    """Wait until PID has exited: its wait status if it was our child (reaped), else None
    once it is gone from /proc (someone else reaps it). Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    exited = False
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return status
        except ChildProcessError:
            if not alive(pid):
                return None
        if exited:  # exited but not yet reapable (a tracer sees it first): do not spin
            time.sleep(0.001)
        left = deadline - time.monotonic()
        if left <= 0 or not wait_exit(pid, left):
            raise TimeoutError(f"process {pid} still alive after {timeout:.0f}s")
        exited = True


def popen_wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """proc.wait(timeout) woken by the exit itself: Popen.wait polls with sleeps of up to
    50 ms. Raises subprocess.TimeoutExpired."""
    # poll() first: while it says running, the child is unreaped and its pid cannot have
    # been reused, so the pidfd is surely of this process
    if proc.poll() is None and not wait_exit(proc.pid, timeout):
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait(timeout)  # exited: this only reaps


def terminate(pid: int, timeout: float, *, kill: Callable[[int], None],
              fail: Callable[[str], Exception],
              wait: Callable[[int, float], int | None] = wait_status) -> int | None:
    """A workload's end: SIGTERM `pid` and wait (`wait`, by default wait_status) for it to
    exit; returns what `wait` returns. `fail(what)` makes the error raised when pid is not
    running, or when it outlives `timeout`: it is then `kill`ed first."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise fail(f"pid {pid} is not running") from None
    try:
        return wait(pid, timeout)
    except TimeoutError:
        kill(pid)
        raise fail(f"pid {pid} did not exit within {timeout:g} s after SIGTERM "
                   "(killed)") from None


def wait_gone(pid: int, timeout: float) -> bool:
    """wait_status() as a yes/no: False on timeout."""
    try:
        wait_status(pid, timeout)
        return True
    except TimeoutError:
        return False


def kill_and_reap(pid: int, timeout: float = 10.0) -> bool:
    """SIGKILL PID (for a namespace init: the whole namespace) and wait for it."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    return wait_gone(pid, timeout)


def reap_orphans() -> list[int]:
    """Reap every exited child. Call only when no subprocess.Popen of ours is pending."""
    reaped: list[int] = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def ns_pid(host_pid: int) -> int:
    """The innermost pid of a process (last NSpid field): the pid criu and manifests use."""
    with open(f"/proc/{host_pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise ProcessLookupError(f"/proc/{host_pid}/status: no NSpid line")


def tree(host_pid: int) -> dict[int, int]:
    """{ns pid: host pid} for a process and all its live descendants."""
    out: dict[int, int] = {}
    todo = [host_pid]
    while todo:
        pid = todo.pop()
        try:
            out[ns_pid(pid)] = pid
        except OSError:
            continue
        todo += children(pid)
    return out


def tree_pids(root: int) -> list[int]:
    """Host pids of ROOT and its live descendants."""
    return list(tree(root).values())


@contextmanager
def exclusive_lock(lock_file: Path, exclusive: bool) -> Iterator[None]:
    """Shared for ordinary tests, exclusive for `excl` ones, across xdist workers."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
