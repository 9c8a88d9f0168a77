"""A private IPC namespace for one upstream test, its hooks and every criu it meets.

Upstream's `zdtm_ct` unshares the IPC namespace too: the System V shared memory, message
queues and semaphores a test makes (shm*, msgque, sem, ...) are its own, never meet another
test's keys, and vanish with the namespace when the test's last process is gone, even when
it fails before it removes them. zdtmpy does the same per item: the thread that runs the
item unshares its IPC namespace, so every process it starts is born in it, and goes back to
its own at the end.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ZdtmError

CLONE_NEWIPC = 0x08000000


def current() -> str:
    """The IPC namespace of the calling thread, as `ipc:[inode]`."""
    return os.readlink("/proc/thread-self/ns/ipc")


@contextmanager
def private_ipcns() -> Iterator[str]:
    """Run the body in a new IPC namespace; yields its `ipc:[inode]`."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(CLONE_NEWIPC) != 0:
            raise ZdtmError(f"corpus: cannot create the test's IPC namespace (unshare "
                            f"CLONE_NEWIPC): {os.strerror(ctypes.get_errno())}")
        try:
            yield current()
        finally:
            if libc.setns(home, CLONE_NEWIPC) != 0:
                # Staying would put every later test's IPC objects in this one's namespace.
                raise ZdtmError(f"corpus: cannot return to the runner's IPC namespace "
                                f"(setns): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(home)
