"""The calling thread in a namespace of its own for a while, and back in its own after.

zdtm_ct gives every upstream test new network, IPC and PID namespaces (netns.py, ipcns.py,
pidns.py): the thread that runs the item unshares one, so every process it starts is born in
it, and goes back at the end, even when the body failed -- staying would put every later
test in it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ZdtmError


@contextmanager
def unshared(kind: str, flag: int, what: str) -> Iterator[str]:
    """The body runs in a new namespace of `kind` ("net", "ipc", "pid": for the thread's
    children; CLONE_NEW* `flag`, `what` names it in errors); yields the thread's
    `kind:[inode]` after the unshare (for "pid", still the thread's own)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(flag) != 0:
            raise ZdtmError(f"corpus: cannot create the test's {what} (unshare): "
                            f"{os.strerror(ctypes.get_errno())}")
        try:
            yield os.readlink(f"/proc/thread-self/ns/{kind}")
        finally:
            if libc.setns(home, flag) != 0:
                raise ZdtmError(f"corpus: cannot return to the runner's {what} (setns): "
                                f"{os.strerror(ctypes.get_errno())}")
    finally:
        os.close(home)
