"""A time namespace for one upstream test, its hooks and every criu it meets.

Upstream's `zdtm_ct` runs every test in a new time namespace whose clocks are ahead of the
host's (CLOCK_MONOTONIC by 110 days, CLOCK_BOOTTIME by 40): a test that mixes up clocks, or
a criu that restores timers against the wrong one, shows. zdtmpy does the same per item:
the thread that runs the item (the process's main thread: offsets are written through
/proc/self) unshares its time namespace for children and sets the offsets before its first
child, so every process it starts is born in it.

A multi-threaded process cannot setns() back into a time namespace (EUSERS), so at the end
the thread gets a fresh one for its children (a new one starts with the offsets of the one
it replaces) with its offsets set back to zero: what it starts later runs on the host's
clocks, as before.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ZdtmError

CLONE_NEWTIME = 0x00000080
CLOCK_MONOTONIC, CLOCK_BOOTTIME = 1, 7
DAY = 24 * 60 * 60
OFFSETS = {CLOCK_MONOTONIC: 110 * DAY, CLOCK_BOOTTIME: 40 * DAY}  # zdtm_ct's
_OFFSETS_FILE = "/proc/self/timens_offsets"


def _new_timens(offsets: dict[int, int], what: str) -> None:
    """unshare(CLONE_NEWTIME) for children, then set its offsets (before any child)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWTIME) != 0:
        raise ZdtmError(f"corpus: cannot create {what} (unshare CLONE_NEWTIME): "
                        f"{os.strerror(ctypes.get_errno())}")
    text = "".join(f"{clock} {seconds} 0\n" for clock, seconds in offsets.items())
    try:
        with open(_OFFSETS_FILE, "w") as f:
            f.write(text)
    except OSError as exc:
        raise ZdtmError(f"corpus: cannot set the clock offsets of {what} ({_OFFSETS_FILE}): "
                        f"{exc.strerror}") from None


def for_children() -> str:
    """The time namespace the calling process's children are born in, as `time:[inode]`."""
    return os.readlink("/proc/self/ns/time_for_children")


def possible() -> bool:
    """The kernel has time namespaces and the caller is the process's main thread."""
    return (os.path.exists(_OFFSETS_FILE)
            and threading.get_native_id() == os.getpid())


@contextmanager
def private_timens() -> Iterator[str | None]:
    """Run the body with the thread's children born in a new time namespace whose clocks
    are ahead by OFFSETS; yields its `time:[inode]` (None where not possible())."""
    if not possible():
        yield None
        return
    try:
        _new_timens(OFFSETS, "the test's time namespace")
        yield for_children()
    finally:
        _new_timens({clock: 0 for clock in OFFSETS}, "the runner's later children's time "
                    "namespace (host clocks)")
