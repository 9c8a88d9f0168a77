"""The PID namespace (with its own /proc) flavor-h corpus items run in: real namespaces, real
processes (root only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from zdtmpy import spawnns
from zdtmpy.corpus.pidns import nspid_fields, private_pidns
from zdtmpy.isolation import alive, reap_orphans

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="PID namespaces need root")


def _inside(script: str, timeout: float = 30) -> str:
    """Run a shell script as the test's processes are started (inside the namespaces)."""
    with spawnns.spawning():
        proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _gone(pid: int, timeout: float = 10) -> bool:
    """PID exited. Orphans of a killed runner are reparented to us (pytest is a subreaper
    here): reaped, as the namespace's end waits for every task of it to be reaped."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        reap_orphans()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    reap_orphans()
    return True


def test_children_see_their_own_namespace_in_proc():
    with private_pidns() as ns:
        out = _inside("readlink /proc/self; cat /proc/1/comm; readlink /proc/1/ns/cgroup")
        me, init, cgroup_ns = out.split()
        assert init == "nsinit"  # pid 1 is the namespace's init, not the host's
        assert cgroup_ns.startswith("cgroup:[")  # cgroupns opens this one
        assert int(me) < 100  # a pid of the new namespace, not a host pid
        assert nspid_fields(ns.init.pid)[-1] == 1
        # the runner itself keeps the host's /proc
        assert os.readlink("/proc/self") == str(os.getpid())


def test_pids_translate_both_ways():
    with private_pidns() as ns:
        ns_pid = int(_inside("sleep 30 >/dev/null 2>&1 & echo $!"))
        host = ns.to_host(ns_pid)
        assert host != ns_pid
        assert ns.to_ns(host) == ns_pid
        assert nspid_fields(host)[-1] == ns_pid
        with pytest.raises(Exception, match="no process has pid 999"):
            ns.to_host(999)
    assert _gone(host)  # the namespace died with its init: nothing left behind


def test_orphans_are_reaped_so_their_pids_are_free():
    with private_pidns() as ns:
        ns_pid = int(_inside("(sleep 0.2; exit 3) >/dev/null 2>&1 & echo $!"))
        host = ns.to_host(ns_pid)
        assert _gone(host, 5)  # reaped by nsinit, not left a zombie
        assert ns.init.poll() is None


def test_body_failure_and_reuse():
    for _ in range(2):  # the thread gets its own PID namespace for children back each time
        with pytest.raises(RuntimeError, match="boom"), private_pidns() as ns:
            ns_pid = int(_inside("setsid sleep 30 >/dev/null 2>&1 & echo $!"))
            host = ns.to_host(ns_pid)
            raise RuntimeError("boom")
        assert _gone(host)
        assert ns.init.returncode is not None  # reaped
    child = subprocess.run(["sh", "-c", "readlink /proc/self"], capture_output=True,
                           text=True, check=True)
    assert int(child.stdout) > 1  # born in our own namespace again, not a dead one


def test_only_the_thread_that_entered_it_spawns_inside():
    seen: list[str] = []

    def other() -> None:
        with spawnns.spawning():  # no namespace on this thread: as before
            seen.append(subprocess.run(["cat", "/proc/1/comm"], capture_output=True,
                                       text=True, timeout=30).stdout)

    with private_pidns():
        t = threading.Thread(target=other)
        t.start()
        t.join(30)
        assert spawnns.active() and _inside("cat /proc/1/comm") == "nsinit\n"
    assert not spawnns.active()
    with open("/proc/1/comm") as f:
        assert seen == [f.read()]  # the host's pid 1


_RUNNER = """
import os, subprocess, sys
from zdtmpy import spawnns
from zdtmpy.isolation import alive, reap_orphans
from zdtmpy.corpus.pidns import private_pidns
with private_pidns() as ns:
    with spawnns.spawning():
        p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    print(p.pid, ns.init.pid, flush=True)
    sys.stdin.read()
"""


def test_a_killed_runner_leaves_nothing_behind():
    runner = subprocess.Popen([sys.executable, "-c", _RUNNER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    sleeper, init = (int(x) for x in runner.stdout.readline().split())
    assert os.path.exists(f"/proc/{sleeper}")
    runner.send_signal(signal.SIGKILL)  # no cleanup code of the runner runs
    runner.wait(30)
    assert _gone(init) and _gone(sleeper)


def test_a_helper_never_waited_for_does_not_hold_the_end():
    """A child of ours in the namespace that nobody waits for is a zombie after the kernel
    killed it: the namespace's init cannot finish dying until it is reaped."""
    start = time.monotonic()
    with private_pidns() as ns:
        with spawnns.spawning():
            forgotten = subprocess.Popen(["sleep", "30"])
    assert time.monotonic() - start < 5
    assert ns.init.returncode is not None and _gone(forgotten.pid)


def test_a_dead_init_is_named_when_a_process_cannot_start():
    with private_pidns() as ns:
        ns.init.kill()
        ns.init.wait(10)
        with pytest.raises(OSError, match="init \\(nsinit\\) has exited"), spawnns.spawning():
            subprocess.Popen(["true"])
        assert os.readlink("/proc/self") == str(os.getpid())  # back home all the same
