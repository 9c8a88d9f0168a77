"""isolation's waits: woken by the exit itself (a pidfd), for children and for others."""

import os
import subprocess
import sys

import pytest

from zdtmpy.isolation import popen_wait, wait_exit, wait_status


def _sleeper(seconds):
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_a_child_is_reaped_with_its_status():
    p = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(0.2); sys.exit(7)"])
    status = wait_status(p.pid, 30)
    assert status is not None and os.waitstatus_to_exitcode(status) == 7
    p.returncode = 7  # reaped by wait_status: Popen must not wait for it


def test_a_child_that_outlives_the_timeout_is_left_alone():
    p = _sleeper(60)
    try:
        with pytest.raises(TimeoutError, match=f"process {p.pid} still alive"):
            wait_status(p.pid, 0.2)
        assert not wait_exit(p.pid, 0.1)
        assert p.poll() is None                                   # neither killed nor reaped
    finally:
        p.kill()
        p.wait(10)


def test_a_process_that_is_not_our_child():
    """A grandchild: no wait status for us, only its end (None)."""
    r, w = os.pipe()
    parent = subprocess.Popen(
        [sys.executable, "-c", "import os, subprocess, sys, time\n"
         "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.3)'])\n"
         f"os.write({w}, str(p.pid).encode()); p.wait()"], pass_fds=(w,))
    os.close(w)
    grandchild = int(os.read(r, 32))
    os.close(r)
    assert wait_status(grandchild, 30) is None
    assert parent.wait(30) == 0
    assert wait_exit(grandchild, 1)                               # gone: at once


def test_popen_wait():
    p = _sleeper(0.2)
    assert popen_wait(p, 30) == 0 and p.returncode == 0
    assert popen_wait(p, 30) == 0                                 # already reaped: returns
    q = _sleeper(60)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            popen_wait(q, 0.2)
        assert q.returncode is None
    finally:
        q.kill()
        assert popen_wait(q, 10) == -9
