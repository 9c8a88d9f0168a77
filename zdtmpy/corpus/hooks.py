"""Upstream's per-test scripts: `.checkskip` (may this test run here?) and `.hook` (called
around the cycle with --post-start, --pre-dump, --pre-restore, --post-restore, --clean).

Both run as upstream runs them: from the tree's test/ directory, with a timeout here, and
with the same clean environment the test gets plus ZDTM_TEST_PID / ZDTM_IMG_DIR for hooks.
Their TMPDIR is never the host's /tmp: a hook's is its item's own temporary directory, a
.checkskip's one made for the call, so what they leave there (cgroup_yard.hook's
`tempfile.mkdtemp` on a failed cleanup) goes with the item or the call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from .. import spawnns
from ..errors import ZdtmError
from .flavor import base_env
from .suite import Suite, UpstreamTest

TIMEOUT = 60
_SHOW = 4000

_checkskip_cache: dict[Path, str | None] = {}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a script; output goes to a file, so a daemon it leaves behind cannot hold us."""
    with tempfile.TemporaryFile() as out:
        try:
            with spawnns.spawning():  # flavor h: in the test's namespaces
                proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        except OSError as exc:
            return -1, f"(cannot run: {exc})"
        try:
            rc = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -1
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - _SHOW))
        text = out.read().decode(errors="replace")
    return rc, text + (f"\n(killed after {TIMEOUT} s)" if rc == -1 else "")


def checkskip(suite: Suite, test: UpstreamTest) -> str | None:
    """Why the test's .checkskip says it cannot run here, or None (cached per process)."""
    script = test.file(suite, ".checkskip")
    if script not in _checkskip_cache:
        reason = None
        if os.access(script, os.X_OK):
            from .ipcns import private_ipcns
            from .netns import private_netns

            # As upstream's, inside zdtm_ct: the links some make (macvlan, cr_veth) and what
            # they leave on failure never reach the runner's network.
            tmp = tempfile.mkdtemp(prefix="zdtmpy-checkskip-")
            try:
                with private_netns(), private_ipcns():
                    rc, out = _run([str(script)], suite.test_dir, base_env(tmp))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if rc != 0:
                last = next((ln for ln in reversed(out.splitlines()) if ln.strip()), "")
                reason = (f"checkskip: {script.name} exited {rc}"
                          + (f" ({last.strip()[:200]})" if last else ""))
        _checkskip_cache[script] = reason
    return _checkskip_cache[script]


def has_hook(suite: Suite, test: UpstreamTest) -> bool:
    return os.access(test.file(suite, ".hook"), os.X_OK)


def hook_view(suite: Suite, test: UpstreamTest, workdir: Path) -> Path:
    """A directory that looks like the tree's test/ to a hook, except that
    `zdtm/<subdir>` is the test's own work directory: hooks name the test's files relative
    to test/ (`zdtm/static/cr_veth.pid.inprogress`, `zdtm/static/net_lock.sync`), and here
    each test runs in a directory of its own. Made of symlinks; returns the test/ stand-in."""
    view = workdir / ".upstream"
    layers = [(suite.tree, view, "test"), (suite.test_dir, view / "test", "zdtm"),
              (suite.zdtm, view / "test" / "zdtm", test.subdir)]
    for real, fake, inner in layers:
        fake.mkdir(parents=True, exist_ok=True)
        for entry in os.listdir(real):
            link = fake / entry
            if entry != inner and not link.is_symlink():
                link.symlink_to(real / entry)
    own = view / "test" / "zdtm" / test.subdir
    if not own.is_symlink():
        own.symlink_to(workdir)
    return view / "test"


def upstream_relative(opts: tuple[str, ...], test: UpstreamTest,
                      test_dir: Path) -> tuple[str, ...]:
    """criu works in its images directory, upstream's test/dump/<test name>/<pid>/<n>: a
    desc's option value relative to it (cgroup_yard: `../../../../../../external_yard`)
    names a path under test/. Here the same path under the test's stand-in for test/."""
    images = PurePosixPath("dump", test.name, "1", "1")
    out = []
    for opt in opts:
        if opt.startswith("../"):
            under_test = os.path.normpath(images / opt)
            if not under_test.startswith(("..", "dump/")):
                opt = str(test_dir / under_test)
        out.append(opt)
    return tuple(out)


def run_hook(suite: Suite, test: UpstreamTest, point: str, tmpdir: Path,
             pid: int | None = None, images: Path | None = None, cwd: Path | None = None,
             mark: dict[str, str] | None = None) -> str:
    """Call the test's hook at `point` ('--pre-dump', ...) with TMPDIR=`tmpdir` (the item's
    own); ZdtmError if it fails."""
    script = test.file(suite, ".hook")
    if not os.access(script, os.X_OK):
        return ""
    env = base_env(str(tmpdir))
    env.update(mark or {})  # daemons a hook leaves behind die with the test's processes
    if pid is not None:
        env["ZDTM_TEST_PID"] = str(pid)
    if images is not None:
        env["ZDTM_IMG_DIR"] = str(images)
    rc, out = _run([str(script), point], cwd or suite.test_dir, env)
    if rc != 0:
        raise ZdtmError(f"{test.name}: {script.name} {point} exited {rc}:\n{out}")
    return out
