"""The time namespace corpus items run in: real namespaces, real clocks (root only)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from zdtmpy.corpus import timens

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not timens.possible(),
                                reason="time namespaces need root, a kernel with them and "
                                       "the process's main thread")

_CLOCKS = ("import time; print(time.clock_gettime(time.CLOCK_MONOTONIC), "
           "time.clock_gettime(time.CLOCK_BOOTTIME))")


def _child_clocks() -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _CLOCKS], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    return float(out[0]), float(out[1])


def test_children_run_ahead_and_later_ones_on_the_host_clocks():
    host_ns = os.readlink("/proc/self/ns/time")
    with timens.private_timens() as inner:
        assert inner is not None and inner != host_ns
        mono, boot = _child_clocks()
        now_mono, now_boot = time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME)
        assert mono - now_mono == pytest.approx(110 * timens.DAY, abs=30)
        assert boot - now_boot == pytest.approx(40 * timens.DAY, abs=30)
    assert os.readlink("/proc/self/ns/time") == host_ns  # the runner itself never moved
    assert timens.for_children() != inner
    mono, _ = _child_clocks()
    assert mono - time.monotonic() == pytest.approx(0, abs=30)


def test_a_failing_body_still_leaves_the_offsets_behind():
    with pytest.raises(RuntimeError, match="boom"), timens.private_timens() as inner:
        raise RuntimeError("boom")
    assert timens.for_children() != inner
    mono, _ = _child_clocks()
    assert mono - time.monotonic() == pytest.approx(0, abs=30)
