"""isolation.terminate: the one SIGTERM-wait-kill path of zdtmpy's and the corpus's workloads."""

import os
import signal
import subprocess
import sys

import pytest

from zdtmpy.isolation import terminate


class Failed(Exception):
    pass


def _killer(killed):
    def kill(pid):
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)
    return kill


def test_a_process_that_ends_on_sigterm_gives_its_status():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed = []
    status = terminate(p.pid, 10, kill=_killer(killed), fail=Failed)
    assert status is not None and os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGTERM and killed == []
    p.returncode = -signal.SIGTERM  # reaped by terminate: Popen must not wait for it


def test_a_process_that_ignores_sigterm_is_killed_and_named():
    p = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                          "print('ready', flush=True)\ntime.sleep(60)"],
                         stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    killed = []
    with pytest.raises(Failed, match=rf"pid {p.pid} did not exit within 0.3 s after SIGTERM"):
        terminate(p.pid, 0.3, kill=_killer(killed), fail=Failed)
    assert killed == [p.pid]
    assert p.wait(10) == -signal.SIGKILL
    p.stdout.close()


def test_a_pid_that_is_gone_is_an_error_not_a_wait():
    p = subprocess.Popen(["true"])
    p.wait(10)
    with pytest.raises(Failed, match=rf"pid {p.pid} is not running"):
        terminate(p.pid, 10, kill=_killer([]), fail=Failed)
