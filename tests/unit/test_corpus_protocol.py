"""The upstream start/stop protocol, with small stand-in tests written as shell scripts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from zdtmpy.corpus.protocol import UpstreamWorkload
from zdtmpy.corpus.suite import UpstreamTest
from zdtmpy.errors import WorkloadError
from zdtmpy.isolation import alive, become_subreaper

# Daemonizes like upstream's test library: the child logs to NAME.out.inprogress, the launcher
# writes the pidfile once the child is ready and exits; on SIGTERM the child renames its log to
# NAME.out with the verdict.
GOOD = """#!/bin/sh
name=$(basename "$0")
for a in "$@"; do case "$a" in --pidfile=*) pidfile=${a#*=};; --outfile=*) out=${a#*=};; esac; done
setsid sh -c '
  trap "echo PASS >> $0.inprogress; mv $0.inprogress $0; exit 0" TERM
  echo started > $0.inprogress
  echo ready > $0.ready
  while :; do sleep 0.05; done' "$out" &
while [ ! -f "$out.ready" ]; do sleep 0.01; done
echo $! > "$pidfile"
"""
# The child dies before it is ready: upstream's launcher would wait forever.
DIES = """#!/bin/sh
for a in "$@"; do case "$a" in --outfile=*) out=${a#*=};; esac; done
sh -c 'echo "ERR: cannot set up" > $0.inprogress; exit 1' "$out" &
exec tail -f /dev/null
"""


@pytest.fixture(autouse=True)
def _subreaper():
    become_subreaper()


def _workload(tmp_path: Path, script: str, timeout: float = 10) -> UpstreamWorkload:
    exe = tmp_path / "src" / "fake00"
    exe.parent.mkdir()
    exe.write_text(script)
    exe.chmod(0o755)
    test = UpstreamTest("zdtm/static/fake00", "static", "fake00", ("--filename=$<.test",))
    env = {"PATH": "/usr/bin:/bin"}
    return UpstreamWorkload(test, exe, tmp_path / "work", env, start_timeout=timeout)


def test_start_stop_pass(tmp_path):
    wl = _workload(tmp_path, GOOD)
    try:
        pid = wl.start()
        assert alive(pid)
        assert (tmp_path / "work" / "fake00").exists()  # run as ./NAME in its directory
        verdict = wl.stop(pid, timeout=10)
        assert verdict.status == "PASS", verdict.detail
        assert not alive(pid)
    finally:
        wl.kill()


def test_a_test_that_dies_before_ready_fails_fast_with_its_log(tmp_path):
    wl = _workload(tmp_path, DIES, timeout=30)
    t0 = time.monotonic()
    with pytest.raises(WorkloadError) as err:
        wl.start()
    assert time.monotonic() - t0 < 10
    text = str(err.value)
    assert "exited before it was ready" in text
    assert "fake00.out.inprogress (the test never finished)" in text
    assert "ERR: cannot set up" in text
    assert wl._proc is not None and wl._proc.poll() is not None  # launcher killed


def test_kill_ends_the_test(tmp_path):
    wl = _workload(tmp_path, GOOD)
    pid = wl.start()
    wl.kill()
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid)
