"""A PID namespace of its own, with its own /proc, for one flavor-h upstream test.

Upstream's runner starts every test through `zdtm_ct`: a new PID namespace with a fresh
/proc, in which zdtm.py is pid 1 and runs the test, its hooks and criu. Tests rely on it:
cgroupns opens /proc/1/ns/cgroup, which must be a process of the test's own. zdtmpy does the
same per flavor-h item, from the thread that runs the item (pytest's main thread):

* unshare(CLONE_NEWPID) makes the thread's next child pid 1 of a new PID namespace: that is
  `nsinit` (nsinit.c), which makes a mount namespace whose /proc shows the PID namespace,
  and reaps orphans (the dumped tree, so that the restore finds its pids free).
* spawnns.born_in() makes the test, its hooks and every criu be born in that PID and mount
  namespace; the runner itself keeps the host's /proc (and may start threads).
* pids: the test's pidfile, criu's -t/--pidfile and ZDTM_TEST_PID hold pids of the test's
  namespace; the runner keeps host pids. `ItemPidNs` translates at those borders.

At the end nsinit's stdin is closed: it exits, and the kernel kills whatever of the test
is left in the namespace. If the runner dies, nsinit sees EOF or its parent-death signal.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import spawnns
from ..errors import ZdtmError
from ..isolation import children
from .unshared import unshared

CLONE_NEWPID = 0x20000000
START_TIMEOUT = 10.0
END_TIMEOUT = 10.0
_POLL = 0.002
SOURCE = Path(__file__).with_name("nsinit.c")


def nsinit_binary() -> Path:
    """nsinit, built once per source and compiler into zdtmpy's cache."""
    from ..build import CFLAGS, build_cached, compiler_command, new_compiler
    from ..errors import BuildError

    h = hashlib.sha256(repr((compiler_command(), CFLAGS)).encode())
    h.update(SOURCE.read_bytes())

    def build(tmp: Path) -> Path:
        from distutils.errors import CompileError, LinkError

        cc, cap = new_compiler("nsinit", CFLAGS)
        try:
            objs = cc.compile([str(SOURCE)], output_dir=str(tmp / "obj"))
            cc.link_executable(objs, "nsinit", output_dir=str(tmp))
        except (CompileError, LinkError):
            raise BuildError(f"building {SOURCE} failed:\n{cap.output()}") from None
        return tmp / "nsinit"

    return build_cached("nsinit", h.hexdigest()[:20], "nsinit", build)


def nspid_fields(host_pid: int) -> list[int]:
    """A process's NSpid line: its pid in the host's namespace, then in each nested one."""
    with open(f"/proc/{host_pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    raise ProcessLookupError(f"/proc/{host_pid}/status: no NSpid line")


class ItemPidNs:
    """The PID namespace of one item, seen from the runner: its init and pid translation."""

    def __init__(self, init: subprocess.Popen[bytes]) -> None:
        self.init = init
        self.level = len(nspid_fields(init.pid)) - 1  # index of its pids in NSpid lines

    def to_ns(self, host_pid: int) -> int:
        """The pid a process of this namespace has in it (what criu and hooks take)."""
        fields = nspid_fields(host_pid)
        if len(fields) <= self.level:
            raise ZdtmError(f"process {host_pid} is not in the test's PID namespace")
        return fields[self.level]

    def to_host(self, ns_pid: int) -> int:
        """The host pid of the process that has `ns_pid` in this namespace."""
        todo = [self.init.pid]
        seen: set[int] = set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            with contextlib.suppress(OSError, ValueError):
                fields = nspid_fields(pid)
                if len(fields) > self.level and fields[self.level] == ns_pid:
                    return pid
            todo += children(pid)
        raise ZdtmError(f"no process has pid {ns_pid} in the test's PID namespace "
                        f"(init {self.init.pid})")


def _start_init(exe: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, close_fds=True, env={})
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    said = os.read(proc.stdout.fileno(), 4096).decode(errors="replace").strip() if ready else ""
    if said != "ready":
        _end_init(proc, 1)
        raise ZdtmError("corpus: the test's PID namespace init (nsinit) did not start: "
                        + (said or f"no answer within {START_TIMEOUT:g} s"))
    proc.stdout.close()
    return proc


def _reap_ours_inside(level: int) -> None:
    """Reap our own children of the namespace that have died (a helper whose Popen was never
    waited): its init cannot finish dying while a task of it is an unreaped zombie."""
    for child in children(os.getpid()):
        try:
            with open(f"/proc/{child}/status") as f:
                status = f.read()
        except OSError:
            continue
        state = status.split("State:")[1].split()[0] if "State:" in status else ""
        nspid = status.split("NSpid:")[1].split("\n")[0].split() if "NSpid:" in status else []
        if state == "Z" and len(nspid) > level:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)


def _end_init(proc: subprocess.Popen[bytes], level: int) -> None:
    """Close nsinit's stdin (it exits; the kernel kills the rest of the namespace) and wait
    for it, reaping what of the namespace is ours; SIGKILL it after END_TIMEOUT."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    deadline = time.monotonic() + END_TIMEOUT
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            proc.kill()
            deadline = time.monotonic() + END_TIMEOUT
        _reap_ours_inside(level)
        time.sleep(_POLL)
    if proc.stdout is not None:
        proc.stdout.close()


@contextmanager
def private_pidns() -> Iterator[ItemPidNs]:
    """Run the body with what this thread starts inside spawnns.spawning() born in a new PID
    namespace (pid 1: nsinit) and in its mount namespace (its /proc)."""
    exe = nsinit_binary()
    # The thread's children's namespace is the new one only while nsinit starts: a thread
    # whose children's namespace is another cannot start threads; spawnns steps in later.
    with unshared("pid", CLONE_NEWPID, "PID namespace"):
        init = _start_init(exe)  # the first child: pid 1
    level = 1
    try:
        ns = ItemPidNs(init)
        level = ns.level
        with spawnns.born_in(f"/proc/{init.pid}/ns"):
            yield ns
    finally:
        _end_init(init, level)
