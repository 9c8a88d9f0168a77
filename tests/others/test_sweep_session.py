"""The session-start sweep, as a user meets it: a process left by a crashed session is
killed when the next session starts, and the header says so; a live session's are not.

Every session on this machine sweeps, so the scenario runs in a PID namespace of its own:
sweeps never judge marks from another PID namespace, so nobody else takes our orphan first.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

SCENARIO = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from zdtmpy import marker

    def state(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return "gone"

    def running_sleep(pid):
        while not open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"sleep"):
            time.sleep(0.005)

    crashed = subprocess.Popen([sys.executable, "-c", '''
    import subprocess
    from zdtmpy import marker
    p = subprocess.Popen(["sleep", "600"], env=marker.env("crashed-session"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(p.pid, flush=True)
    '''], stdout=subprocess.PIPE, text=True)
    orphan = int(crashed.stdout.readline())
    crashed.wait()  # the session is gone; its sleep lives on
    running_sleep(orphan)
    live = subprocess.Popen(["sleep", "600"], env=marker.env("live-session"))
    running_sleep(live.pid)
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=120)
    time.sleep(0.2)
    out = {"orphan": orphan, "orphan_state": state(orphan), "live_state": state(live.pid),
           "rc": res.returncode, "stdout": res.stdout}
    live.kill()
    print(json.dumps(out))
    """)


def test_next_session_kills_what_a_gone_session_left(pytester):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    script = pytester.path / "scenario.py"
    script.write_text(SCENARIO)
    # the PID namespace's init is this python: when it exits, everything in it dies
    run = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", sys.executable,
                          str(script)], capture_output=True, text=True, timeout=180,
                         cwd=pytester.path)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    assert got["rc"] == 0, got["stdout"]
    assert "left by gone test sessions" in got["stdout"], got["stdout"]
    assert f"pid {got['orphan']}: sleep 600 (test crashed-session" in got["stdout"]
    assert got["orphan_state"] in ("gone", "Z"), got  # killed (a zombie until its reaper)
    assert got["live_state"] not in ("gone", "Z"), got  # its session lives: spared
