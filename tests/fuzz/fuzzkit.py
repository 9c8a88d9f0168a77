"""The fuzz suite's harness: profiles, a guard per case (deadline, memory cap, counts) and
snapshots that prove a refusal changed nothing and no tool wrote outside its directory.

Profiles (ZDTMPY_FUZZ): `ci` (the default, a few minutes on two cores) and `long` (the
figures of the issue note). ZDTMPY_FUZZ_REPORT=FILE appends one JSON line per test with
cases, refusals, successes and the max RSS, so a long run can be summed up.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from hypothesis import HealthCheck, settings

from zdtmpy.errors import ZdtmError

PROFILE = os.environ.get("ZDTMPY_FUZZ", "ci")
CASE_SECONDS = float(os.environ.get("ZDTMPY_FUZZ_DEADLINE", "30"))
RSS_LIMIT = 1 << 30           # bytes; the whole worker process, checked after every case
ADDRESS_HEADROOM = 3 << 30    # address space a case may add (threads reserve arenas)

_common = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=list(HealthCheck))
settings.register_profile("ci", max_examples=int(os.environ.get("ZDTMPY_FUZZ_CASES", "12")),
                          **_common)
settings.register_profile("long",
                          max_examples=int(os.environ.get("ZDTMPY_FUZZ_CASES", "500")),
                          **_common)
settings.load_profile(PROFILE)


class Hang(Exception):
    """A case outlived its deadline: a hang as far as the suite is concerned."""


class Counts:
    """Cases per (tool, format, level) with their outcome, reported at the end of a test."""

    def __init__(self, test: str):
        self.test = test
        self.c: Counter[tuple[str, str, str, str]] = Counter()

    def add(self, tool: str, fmt: str, level: str, outcome: str) -> None:
        self.c[(tool, fmt, level, outcome)] += 1

    def report(self) -> None:
        path = os.environ.get("ZDTMPY_FUZZ_REPORT")
        if not path:
            return
        rows = [{"test": self.test, "tool": t, "format": f, "level": lv, "outcome": o,
                 "cases": n, "max_rss_kib": max_rss_kib()}
                for (t, f, lv, o), n in sorted(self.c.items())]
        with open(path, "a") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """A hard deadline (SIGALRM interrupts even a blocking open()) and an address-space cap
    for one case; the worker's max RSS is checked afterwards."""
    def expired(signum, frame):
        raise Hang(f"{what}: no answer within {CASE_SECONDS:g}s")

    old_handler = signal.signal(signal.SIGALRM, expired)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + ADDRESS_HEADROOM
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    rss = max_rss_kib() * 1024
    assert rss < RSS_LIMIT, f"{what}: max RSS {rss >> 20} MiB is over {RSS_LIMIT >> 20} MiB"


def outcome(fn: Callable[[], object]) -> str:
    """'ok' or 'refused' (the tools' own error type); anything else propagates."""
    try:
        fn()
    except ZdtmError:
        return "refused"
    return "ok"


def snapshot(root: Path, skip: Path | None = None) -> dict[str, object]:
    """Every entry under root (not under skip): file bytes, link targets, kinds."""
    out: dict[str, object] = {}
    for base, dirs, files in os.walk(root):
        if skip is not None and Path(base) == skip.parent:
            dirs[:] = [d for d in dirs if Path(base, d) != skip]
            files = [f for f in files if Path(base, f) != skip]
        for name in dirs + files:
            p = Path(base, name)
            key = str(p.relative_to(root))
            st = os.lstat(p)
            if os.path.islink(p):
                out[key] = ("link", os.readlink(p))
            elif p.is_file() and not p.is_symlink():
                out[key] = p.read_bytes()
            else:
                out[key] = ("kind", st.st_mode & 0o170000)
    return out


@contextlib.contextmanager
def sandbox(base: Path) -> Iterator[Path]:
    """A fresh directory with `outside/victim.txt` beside whatever the case builds."""
    root = Path(tempfile.mkdtemp(dir=base))
    (root / "outside").mkdir()
    (root / "outside" / "victim.txt").write_bytes(b"must never change")
    try:
        yield root
    finally:
        for p in root.rglob("*"):  # a case may leave an unreadable or odd file behind
            with contextlib.suppress(OSError):
                if not p.is_symlink():
                    p.chmod(0o700)
        shutil.rmtree(root, ignore_errors=True)
