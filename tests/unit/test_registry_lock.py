"""The machine's session registry lock: a holder that never lets go gives a clear error in
bounded time instead of stalling every other session; a holder that lets go is waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from zdtmpy.errors import ZdtmError
from zdtmpy.registry import Registry

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(lock, seconds: float) -> subprocess.Popen[str]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "held\n"
    return p


def test_a_stuck_holder_is_named_after_the_timeout(tmp_path):
    p = _holder(tmp_path / "reg" / ".lock", 60)
    try:
        t0 = time.monotonic()
        with pytest.raises(ZdtmError, match=r"reg/\.lock: another zdtmpy session has held"):
            with Registry(tmp_path / "reg", lock_timeout=0.5).locked():
                pass
        assert 0.5 <= time.monotonic() - t0 < 10
    finally:
        p.kill()
        p.wait()


def test_a_holder_that_lets_go_is_waited_for(tmp_path):
    p = _holder(tmp_path / "reg" / ".lock", 0.5)
    try:
        with Registry(tmp_path / "reg", lock_timeout=30).locked() as shared:
            assert shared.alone
        assert p.poll() is not None  # the lock came only once the holder had exited
    finally:
        p.kill()
        p.wait()


def test_others_are_live_sessions_neither_this_process_nor_its_ancestors(tmp_path):
    """A project test (or an xdist worker) counts as the session running it; any other
    live process's entry is another session; a dead one's entry is dropped."""
    from zdtmpy import marker

    reg = tmp_path / "reg"
    reg.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = marker.start_time(dead.pid)
    dead.wait()
    try:
        entries = {p: f"session-{p}-{marker.start_time(p)}"
                   for p in (os.getpid(), os.getppid(), other.pid)}
        entries[dead.pid] = f"session-{dead.pid}-{dead_start}"
        for name in entries.values():
            (reg / name).write_text("")
        with Registry(reg).locked() as shared:
            assert not shared.alone   # the parent and the other process count here
            assert Registry(reg).others() == [entries[other.pid]]
        assert not (reg / entries[dead.pid]).exists()
    finally:
        other.kill()
        other.wait()
