"""What a pytest session does so that no process outlives it (the plugin's hooks call these).

* At start (controller or single process): sweep processes left by sessions that are gone
  (a crashed run, a SIGKILLed worker), and say so in the header.
* SIGTERM ends the session like Ctrl-C does, so every test's cleanup runs.
* When an xdist worker dies, and at the end of the session: sweep again (a dead worker's
  workloads and criu now have a gone owner), and kill what this process itself still owns.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import NoReturn

from . import marker

# Sessions configured in this process: pytester's inline runs nest one inside another, and
# only the outermost may kill what this pid owns.
_depth = 0


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


def install_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt (pytest then unwinds every test's cleanup)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def sweep_report() -> list[str]:
    """Kill leftovers of gone sessions; header lines saying what was killed (none: [])."""
    killed = marker.sweep()
    if not killed:
        return []
    return [f"zdtmpy: killed {len(killed)} process(es) left by gone test sessions:",
            marker.describe(killed)]


def begin() -> None:
    global _depth
    _depth += 1
    install_sigterm()


def finish(controller: bool) -> list[str]:
    """End of this process's session: kill what it still owns; the controller also sweeps
    what its (now gone) workers left. Returns lines to print (none: [])."""
    global _depth
    _depth -= 1
    if _depth > 0:
        return []
    lines = []
    own = marker.kill_owned()
    if own:
        lines.append(f"zdtmpy: killed {len(own)} process(es) this session left running: {own}")
    if controller:
        lines += sweep_report()
    return lines
