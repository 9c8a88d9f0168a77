"""Build upstream tests with upstream's own Makefiles, once per tree and selection.

`make -C test/zdtm/lib`, then `make -k` of the selected tests in each subdirectory. The build
happens inside the criu tree (that is where upstream's Makefiles put the binaries) under an
exclusive lock, so xdist workers wait for one build instead of racing; a later run whose
binaries all exist does not call make at all. The compiler's output is kept in a log next to
the Makefile and shown for a test that failed to build.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from ..errors import BuildError
from .suite import Suite, UpstreamTest

MAKE_TIMEOUT = 1800  # the whole static set on two busy cores takes minutes, not an hour
LOG_NAME = ".zdtmpy-build.log"
_MAX_SHOWN = 8000


def _make(args: list[str], log: Path, timeout: float) -> int:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ZDTM_", "MAKEFLAGS", "MFLAGS"))}
    with open(log, "ab") as out:
        out.write(f"$ make {' '.join(args)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(["make", *args], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            out.write(f"(make killed after {timeout:.0f} s)\n".encode())
            return -1
        except OSError as exc:
            out.write(f"(cannot run make: {exc})\n".encode())
            return -1
    return proc.returncode


def exe_path(suite: Suite, test: UpstreamTest) -> Path:
    return test.file(suite, "")


def ensure_built(suite: Suite, tests: list[UpstreamTest], jobs: int | None = None) -> None:
    """Build what is missing of `tests` (and the test library). Never raises for one test:
    a test whose binary is still missing fails at its own build stage (see `require`)."""
    missing = [t for t in tests if not exe_path(suite, t).exists()]
    if not missing and (suite.zdtm / "lib" / "libzdtmtst.a").exists():
        return
    lock = suite.zdtm / ".zdtmpy-build.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        missing = [t for t in tests if not exe_path(suite, t).exists()]
        if not missing and (suite.zdtm / "lib" / "libzdtmtst.a").exists():
            return  # another worker built it while we waited
        log = suite.zdtm / LOG_NAME
        j = f"-j{jobs or len(os.sched_getaffinity(0))}"
        if _make(["-C", str(suite.zdtm / "lib"), j], log, MAKE_TIMEOUT) != 0:
            return  # every test then fails at 'build' with this log
        by_dir: dict[str, list[str]] = {}
        for t in missing:
            by_dir.setdefault(t.subdir, []).append(t.short)
        for sub, names in sorted(by_dir.items()):
            _make(["-k", "-C", str(suite.zdtm / sub), j, *names], log, MAKE_TIMEOUT)
    finally:
        os.close(fd)


def require(suite: Suite, test: UpstreamTest) -> Path:
    """The test's binary, or BuildError with the build log's lines about it."""
    exe = exe_path(suite, test)
    if exe.exists():
        return exe
    log = suite.zdtm / LOG_NAME
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    about = [ln for ln in lines if test.short in ln or "rror" in ln][-60:]
    text = "\n".join(about)[-_MAX_SHOWN:] or "(no build output)"
    raise BuildError(f"{test.name}: upstream's Makefile did not build {exe}; build log "
                     f"{log} says:\n{text}")
