"""The session-start sweep, as a user meets it: a process left by a crashed session is
killed when the next session starts, and the header says so; a live session's are not."""

import os
import subprocess
import sys
import textwrap
import time

from zdtmpy import marker
from zdtmpy.isolation import alive, wait_gone

# The "session": starts a marked process, reports its pid, then waits to be killed. It stays
# alive until just before the next session starts, so no other session on this shared
# machine sweeps its process first.
LEAVE_ONE = textwrap.dedent("""
    import subprocess, sys
    from zdtmpy import marker
    p = subprocess.Popen(["sleep", "600"], env=marker.env("crashed-session"),
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    print(p.pid, flush=True)
    sys.stdin.read()
    """)


def _running_sleep(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().startswith(b"sleep"):
                return
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} did not exec sleep")


def test_next_session_kills_what_a_gone_session_left(pytester):
    session = subprocess.Popen([sys.executable, "-c", LEAVE_ONE], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    orphan = int(session.stdout.readline())
    _running_sleep(orphan)
    live = subprocess.Popen(["sleep", "600"], env=marker.env("live-session"))
    _running_sleep(live.pid)
    try:
        pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
        session.kill()  # the session crashes
        session.wait()
        res = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # plugin autoloads
        res.assert_outcomes(passed=1)
        text = res.stdout.str()
        assert "left by gone test sessions" in text
        assert f"pid {orphan}: sleep 600 (test crashed-session" in text
        assert wait_gone(orphan, 5)
        assert live.poll() is None  # this session (its owner) is alive
    finally:
        session.kill()
        session.wait()
        live.kill()
        live.wait()
        if alive(orphan):
            os.kill(orphan, 9)
