"""The PID and mount namespaces the processes a thread starts are born in.

An upstream test of flavor h runs in a PID namespace whose /proc lives in a mount namespace
of its own (corpus/pidns.py), while the runner's thread must keep seeing the host's /proc.
A thread's children inherit its mount namespace (Linux has no "mount namespace for
children"), and while a thread's PID namespace for children is another than its own it
cannot start threads (EINVAL: a codec pool starting its workers would fail). So the thread
names the namespaces (`born_in`), and every place that starts a test's process, a hook or
criu wraps the start in `spawning()`: the thread steps into both for the fork, and back.

Nothing happens unless `born_in` is active on the calling thread: other threads, and every
built-in item, start their processes as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ZdtmError

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000

_local = threading.local()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, kind: int, what: str) -> None:
    if _libc().setns(fd, kind) != 0:
        raise ZdtmError(f"cannot enter {what} (setns): "
                        f"{os.strerror(ctypes.get_errno())}")


@contextmanager
def born_in(ns_dir: str) -> Iterator[None]:
    """While the body runs, what the calling thread starts inside `spawning()` is born in
    the PID and mount namespaces of `ns_dir` (a process's /proc/PID/ns)."""
    if getattr(_local, "fds", None) is not None:
        raise ZdtmError("spawnns: born_in() is already active on this thread")
    fds: list[int] = []
    try:
        for path in (f"{ns_dir}/pid", f"{ns_dir}/mnt", "/proc/thread-self/ns/pid",
                     "/proc/thread-self/ns/mnt"):
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        _local.fds = tuple(fds)
        yield
    finally:
        _local.fds = None
        for fd in fds:
            os.close(fd)


def active() -> bool:
    """born_in() is active on the calling thread."""
    return getattr(_local, "fds", None) is not None


@contextmanager
def spawning() -> Iterator[None]:
    """Wrap a process start (Popen): under born_in(), the child is born in its namespaces.
    Inside, this thread's /proc is the test's: prepare what reads it (an env) before."""
    fds = getattr(_local, "fds", None)
    if fds is None:
        yield
        return
    pid_ns, mnt_ns, home_pid, home_mnt = fds
    cwd = os.getcwd()
    # setns into a mount namespace needs an fs_struct (root, cwd) of the thread's own; the
    # threads this one started since share its own (no copy when it is not shared).
    if _libc().unshare(CLONE_FS) != 0:
        raise ZdtmError(f"spawnns: unshare(CLONE_FS): {os.strerror(ctypes.get_errno())}")
    _setns(pid_ns, CLONE_NEWPID, "the test's PID namespace")
    try:
        _setns(mnt_ns, CLONE_NEWNS, "the test's mount namespace")
        try:
            os.chdir(cwd)  # setns moved the thread to the namespace's root; Popen inherits cwd
            yield
        except OSError as exc:
            if exc.errno != errno.ENOMEM:
                raise
            # fork() says ENOMEM once the namespace's pid 1 is gone: say so.
            raise OSError(errno.ENOMEM, "cannot start a process in the test's PID namespace: "
                          "its init (nsinit) has exited, or memory is short") from None
        finally:
            _setns(home_mnt, CLONE_NEWNS, "the runner's mount namespace")
            os.chdir(cwd)
    finally:
        _setns(home_pid, CLONE_NEWPID, "the runner's PID namespace")
