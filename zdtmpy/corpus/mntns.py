"""A private mount namespace for one upstream test, its hooks and every criu it meets.

Upstream's runner starts every test through `zdtm_ct`, which unshares the mount namespace and
makes `/` a recursive slave before the test, its hooks and criu run: mounts the test makes
before it enters namespaces of its own (mnt_ext_* mount tmpfs at /tmp/zdtm_ext_*), and those
its hooks make, never propagate back to the host, and they vanish with the namespace. zdtmpy
does the same per item: the thread that runs the item (pytest's main thread) unshares its
mount namespace (which also gives it an fs_struct of its own), so every process it starts is
born in it; at the end the thread goes back to the namespace it came from, and to its cwd.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ZdtmError

CLONE_NEWNS = 0x00020000
MS_REC, MS_SLAVE = 0x4000, 0x80000


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def current() -> str:
    """The mount namespace of the calling thread, as `mnt:[inode]`."""
    return os.readlink("/proc/thread-self/ns/mnt")


def _fail(what: str) -> ZdtmError:
    return ZdtmError(f"corpus: {what}: {os.strerror(ctypes.get_errno())}")


BINFMT_MISC = "/proc/sys/fs/binfmt_misc"


def hold_binfmt_misc() -> bool:
    """Mount binfmt_misc at its usual place in the calling thread's (private) namespace, as
    zdtm_ct does. It keeps the host's binfmt_misc superblock, and so the entries a test
    registers, alive while the test's own mount of it is gone between dump and restore (the
    kernel drops the entries with the last mount), and criu finds it where it looks for the
    host's. False where the kernel has no binfmt_misc (tests that need it then fail)."""
    if os.path.ismount(BINFMT_MISC):
        return True
    return bool(_libc().mount(b"zdtm_binfmt", BINFMT_MISC.encode(), b"binfmt_misc", 0,
                              None) == 0)


@contextmanager
def private_mountns() -> Iterator[str]:
    """Run the body in a new mount namespace whose mounts are slaves of the host's (nothing
    propagates back); yields its `mnt:[inode]`."""
    libc = _libc()
    cwd = os.getcwd()
    home = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(CLONE_NEWNS) != 0:
            raise _fail("cannot create the test's mount namespace (unshare CLONE_NEWNS)")
        try:
            if libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0:
                raise _fail("cannot make / a slave in the test's mount namespace")
            yield current()
        finally:
            if libc.setns(home, CLONE_NEWNS) != 0:
                # Staying would put every later test, and the session's end, in it.
                raise _fail("cannot return to the runner's mount namespace (setns)")
            os.chdir(cwd)  # setns moved this thread to the namespace's root
    finally:
        os.close(home)
