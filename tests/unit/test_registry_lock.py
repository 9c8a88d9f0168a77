"""The machine's session registry lock: a holder that never lets go gives a clear error in
bounded time instead of stalling every other session; a holder that lets go is waited for."""

from __future__ import annotations

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
