"""A private network namespace for one upstream test, its hooks and every criu it meets.

Upstream's runner starts every test, flavor h included, through `zdtm_ct`, which unshares the
network namespace (and brings `lo` up) before the test, its hooks and criu run in it: no test
ever sees the host's network. zdtmpy does the same per item: the thread that runs the item
(pytest's main thread) unshares its network namespace, so every process it starts -- the
test, `.hook` scripts, criu dump/restore, page servers -- is born in it and criu sees the test
in its own network namespace, exactly as under zdtm_ct. Ports (8880...) and the iptables
rules a test adds are private and vanish with the namespace, so such tests run in parallel
(xdist, other sessions) without meeting each other. At the end the thread goes back to the
namespace it came from; the private one dies with the last of the test's processes.

Only the network namespace (zdtm_ct also gives a PID, mount, IPC and time namespace; zdtmpy's
h keeps the host's: what criu must restore into them is the same either way).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .unshared import unshared

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, then ifr_flags in the 24-byte union


def current() -> str:
    """The network namespace of the calling thread, as `net:[inode]`."""
    return os.readlink("/proc/thread-self/ns/net")


def loopback_up() -> None:
    """Bring `lo` up in the calling thread's network namespace (`ip link set up dev lo`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, got)[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


@contextmanager
def private_netns() -> Iterator[str]:
    """Run the body in a new network namespace with `lo` up; yields its `net:[inode]`."""
    with unshared("net", CLONE_NEWNET, "network namespace") as ns:
        loopback_up()
        yield ns
