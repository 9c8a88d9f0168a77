"""A private IPC namespace for one upstream test, its hooks and every criu it meets.

Upstream's `zdtm_ct` unshares the IPC namespace too: the System V shared memory, message
queues and semaphores a test makes (shm*, msgque, sem, ...) are its own, never meet another
test's keys, and vanish with the namespace when the test's last process is gone, even when
it fails before it removes them. zdtmpy does the same per item: the thread that runs the
item unshares its IPC namespace, so every process it starts is born in it, and goes back to
its own at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .unshared import unshared

CLONE_NEWIPC = 0x08000000


def current() -> str:
    """The IPC namespace of the calling thread, as `ipc:[inode]`."""
    return os.readlink("/proc/thread-self/ns/ipc")


@contextmanager
def private_ipcns() -> Iterator[str]:
    """Run the body in a new IPC namespace; yields its `ipc:[inode]`."""
    with unshared("ipc", CLONE_NEWIPC, "IPC namespace") as ns:
        yield ns
