"""Process markers and the sweep, with real processes (no criu needed)."""

import os
import subprocess
import sys
import textwrap
import time

from zdtmpy import marker
from zdtmpy.isolation import alive, wait_gone


def _execed(pid: int) -> None:
    """Wait until PID runs sleep (before exec, a forked child has its parent's environment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().startswith(b"sleep"):
                return
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} did not exec sleep")


def _sleeper(env) -> subprocess.Popen:
    p = subprocess.Popen(["sleep", "600"], env=env, stdin=subprocess.DEVNULL)
    _execed(p.pid)
    return p


def _owner_with_a_child():
    """A python process that started a marked `sleep` and waits: kill it and the sleep's
    owner is gone. (Killed just before a sweep, so other sessions do not sweep it first.)"""
    code = textwrap.dedent("""
        import subprocess, sys
        from zdtmpy import marker
        p = subprocess.Popen(["sleep", "600"], env=marker.env("crashed-run"),
                             start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        print(p.pid, flush=True)
        sys.stdin.read()
        """)
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    pid = int(owner.stdout.readline())
    _execed(pid)
    return owner, pid


def test_mark_is_inherited_and_read_back():
    p = _sleeper(marker.env("t1"))
    try:
        m = marker.read_mark(p.pid)
        assert m is not None and m.tag == "t1"
        assert m.owner == marker.me() and m.owner.alive()
    finally:
        p.kill()
        p.wait()


def test_kill_tagged_kills_only_that_tag():
    mine = _sleeper(marker.env("victim"))
    other = _sleeper(marker.env("bystander"))
    plain = _sleeper(None)
    try:
        assert marker.kill_tagged("victim") == [mine.pid]
        assert mine.wait(5) == -9
        assert other.poll() is None and plain.poll() is None
    finally:
        for p in (mine, other, plain):
            p.kill()
            p.wait()


def test_sweep_kills_orphans_of_gone_owners_and_spares_live_ones():
    live = _sleeper(marker.env("live-session"))
    owner, orphan = _owner_with_a_child()
    try:
        assert orphan not in [k.pid for k in marker.sweep()]
        assert alive(orphan)  # its owner lives: spared
        owner.kill()
        owner.wait()
        killed = marker.sweep()
        # another session on this machine may have swept it first: it must be gone anyway
        assert orphan in [k.pid for k in killed] or not alive(orphan)
        assert wait_gone(orphan, 5)
        assert live.poll() is None  # its owner (this process) is alive: never touched
    finally:
        owner.kill()
        owner.wait()
        live.kill()
        live.wait()
        if alive(orphan):
            os.kill(orphan, 9)


def test_recycled_owner_pid_counts_as_gone_and_foreign_namespace_is_not_judged():
    me = marker.me()
    recycled = marker.Mark(marker.Owner(me.pid, me.start + 1, me.pidns), "x")
    foreign = marker.Mark(marker.Owner(1, 0, me.pidns + 1), "x")
    assert marker.orphaned(recycled, me.pidns)
    assert not marker.orphaned(foreign, me.pidns)
    assert not marker.orphaned(marker.Mark(me, "x"), me.pidns)


def test_malformed_marks_are_ignored():
    for bad in ("", "v2:1:2:3:t", "v1:1:2:3:", "v1:a:2:3:t", "v1:1:2:3:t/../x"):
        env = dict(os.environ, ZDTMPY_MARK=bad)
        p = _sleeper(env)
        try:
            assert marker.read_mark(p.pid) is None
        finally:
            p.kill()
            p.wait()


def test_describe_names_the_process_its_test_and_its_gone_owner():
    m = marker.Mark(marker.Owner(12345, 1, 1), "crashed-run")
    text = marker.describe([marker.Killed(77, m, "sleep 600")])
    assert text == "  pid 77: sleep 600 (test crashed-run, owner pid 12345 gone)"
