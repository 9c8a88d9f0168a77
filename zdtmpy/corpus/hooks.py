"""Upstream's per-test scripts: `.checkskip` (may this test run here?) and `.hook` (called
around the cycle with --post-start, --pre-dump, --pre-restore, --post-restore, --clean).

Both run as upstream runs them: from the tree's test/ directory, with a timeout here, and
with the same clean environment the test gets plus ZDTM_TEST_PID / ZDTM_IMG_DIR for hooks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import ZdtmError
from .flavor import base_env
from .suite import Suite, UpstreamTest

TIMEOUT = 60
_SHOW = 4000

_checkskip_cache: dict[Path, str | None] = {}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT,
                           start_new_session=True)
    except subprocess.TimeoutExpired:
        return -1, f"(killed after {TIMEOUT} s)"
    except OSError as exc:
        return -1, f"(cannot run: {exc})"
    return r.returncode, r.stdout.decode(errors="replace")[-_SHOW:]


def checkskip(suite: Suite, test: UpstreamTest) -> str | None:
    """Why the test's .checkskip says it cannot run here, or None (cached per process)."""
    script = test.file(suite, ".checkskip")
    if script not in _checkskip_cache:
        reason = None
        if os.access(script, os.X_OK):
            rc, out = _run([str(script)], suite.test_dir, base_env("/tmp"))
            if rc != 0:
                last = next((ln for ln in reversed(out.splitlines()) if ln.strip()), "")
                reason = (f"checkskip: {script.name} exited {rc}"
                          + (f" ({last.strip()[:200]})" if last else ""))
        _checkskip_cache[script] = reason
    return _checkskip_cache[script]


def has_hook(suite: Suite, test: UpstreamTest) -> bool:
    return os.access(test.file(suite, ".hook"), os.X_OK)


def run_hook(suite: Suite, test: UpstreamTest, point: str, pid: int | None = None,
             images: Path | None = None) -> str:
    """Call the test's hook at `point` ('--pre-dump', ...); ZdtmError if it fails."""
    script = test.file(suite, ".hook")
    if not os.access(script, os.X_OK):
        return ""
    env = base_env("/tmp")
    if pid is not None:
        env["ZDTM_TEST_PID"] = str(pid)
    if images is not None:
        env["ZDTM_IMG_DIR"] = str(images)
    rc, out = _run([str(script), point], suite.test_dir, env)
    if rc != 0:
        raise ZdtmError(f"{test.name}: {script.name} {point} exited {rc}:\n{out}")
    return out
