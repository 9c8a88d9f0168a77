"""The same upstream ZDTM tests, plain mode, through upstream `zdtm.py -p N` and through
`zdtmpy -n N`, in one run, on the same criu: both wall and CPU times and the ratio, and per
test where the two sides disagree (corpus_parity).

Both sides get the same tests, prebuilt before timing starts. Where root lacks
CAP_SYS_RESOURCE, both keep the tests as root (zdtmpy: --zdtm-as-root; zdtm.py: a copy with
upstream's uid switch turned off, bind-mounted over zdtm.py in a private mount namespace):
otherwise every non-suid test fails to dump on both sides. The load average is printed with
the figures: this machine is shared.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..corpus.slice import SLICE
from ..errors import DescriptorError
from . import BenchError, parse_junit
from . import corpus_parity as parity
from .upstream_leftovers import Before

if TYPE_CHECKING:
    from ..corpus.suite import Suite, UpstreamTest

HELP = "upstream ZDTM corpus: zdtm.py -p N vs zdtmpy -n N, plain mode"
UID_SWITCH = "        if not test_flag(self.__desc, 'suid'):\n"
UID_KEEP = "        if False:  # zdtmpy bench: tests kept as root (no CAP_SYS_RESOURCE)\n"
ZDTM_TIMEOUT = 3600


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="criu",
                   help="criu source tree or its test/zdtm ('criu' = the tree of the criu "
                        "under test; default)")
    p.add_argument("--criu-bin", default=None, help="criu to test (default: as zdtmpy finds)")
    p.add_argument("--flavor", default="h", choices=("h", "ns", "uns"))
    p.add_argument("--jobs", type=int, default=2, help="zdtm.py -p N and zdtmpy -n N")
    p.add_argument("--tests", default=" ".join(SLICE),
                   help="space-separated short names (default: a representative slice)")
    p.add_argument("--all", action="store_true",
                   help="every test of the suite that is not excluded upstream")
    p.add_argument("--work", default=None, help="directory for logs (default: a temp dir)")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], out: Path) -> tuple[float, float, int]:
    cpu0, t0 = _children_cpu(), time.monotonic()
    with open(out, "wb") as fh:
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=ZDTM_TIMEOUT, check=False)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -1
    return time.monotonic() - t0, _children_cpu() - cpu0, rc


def _upstream_prefix(suite: Suite, as_root: bool, work: Path) -> list[str]:
    """How to start zdtm.py. Kept as root: a patched copy is bind-mounted over zdtm.py in a
    private mount namespace of its own (zdtm.py re-executes itself by that name), so the
    tree's file is never modified and the mount ends with the run."""
    src = suite.test_dir / "zdtm.py"
    if not as_root:
        return ["/usr/bin/python3", "zdtm.py"]
    text = src.read_text()
    if UID_SWITCH not in text:
        raise BenchError(f"{src}: upstream's uid switch line not found; cannot keep "
                         "tests as root")
    patched = work / "zdtm-as-root.py"
    patched.write_text(text.replace(UID_SWITCH, UID_KEEP, 1))
    patched.chmod(0o755)  # zdtm_ct executes zdtm.py itself
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" zdtm.py && exec "$@"', str(patched),
            "/usr/bin/python3", "zdtm.py"]


@contextmanager
def upstream_alone(test_dir: Path) -> Iterator[None]:
    """One zdtm.py of a bench per tree at a time: zdtm.py keeps its pid and .out files in
    the tree, and the bench puts back what appeared on the machine while it ran, so two
    benches sharing a tree would mix both. A second one fails at once, saying why."""
    lock = test_dir / ".zdtmpy-bench-corpus.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(
                f"another `zdtmpy bench corpus` is running zdtm.py in {test_dir} (it holds "
                f"{lock.name}); zdtm.py keeps its pid and .out files in the tree, so two "
                "cannot share it: wait for that one, or give this one another criu tree "
                "(--suite)") from None
        yield
    finally:
        os.close(fd)


def _tap_counts(report: Path) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for tap in report.glob("*.tap"):
        for line in tap.read_text(errors="replace").splitlines():
            if re.match(r"^(not )?ok \d+", line):
                key = ("skipped" if "# SKIP" in line else
                       "failed" if line.startswith("not ok") else "passed")
                counts[key] += 1
    return counts


def _prepare_upstream(suite: Suite) -> None:
    """pycriu modules, umount2 and zdtm_ct: what zdtm.py needs besides the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZDTM_")}
    for args in (["-C", str(suite.tree), "lib"],
                 ["-C", str(suite.test_dir), "umount2", "zdtm_ct"]):
        r = subprocess.run(["make", *args], env=env, capture_output=True, text=True,
                           timeout=1800, check=False)
        if r.returncode:
            raise BenchError(f"make {' '.join(args)} failed:\n{r.stdout[-2000:]}"
                             f"{r.stderr[-2000:]}")


def run(args: argparse.Namespace) -> int:
    from ..corpus import build, updesc
    from ..corpus import suite as suite_mod
    from ..corpus.flavor import lacks_cap_sys_resource
    from ..criu import find_criu

    criu = find_criu(args.criu_bin)
    suite = suite_mod.resolve(args.suite, criu.path)
    # A short name may be a static and a transition test (socket-tcp): both, on both sides
    # (zdtmpy's --zdtm-corpus-tests selects both), each once.
    everything: dict[str, list[UpstreamTest]] = {}
    for t in suite.tests():
        if not t.excluded:
            everything.setdefault(t.short, []).append(t)
    names = sorted(everything) if args.all else list(dict.fromkeys(args.tests.split()))
    chosen = []
    for n in names:
        if n not in everything:
            raise BenchError(f"no upstream test named {n!r} in {suite.zdtm}")
        for t in everything[n]:
            try:
                d = updesc.load(t.file(suite, ".desc"), t.name)
            except DescriptorError:
                continue
            if args.flavor in d.flavor and not d.has("noauto"):
                chosen.append(t)
    if not chosen:
        raise BenchError("none of the selected tests runs in flavor " + args.flavor)
    as_root = lacks_cap_sys_resource()
    work = Path(args.work or tempfile.mkdtemp(prefix="zdtmpy-bench-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench corpus: {len(chosen)} tests, flavor {args.flavor}, -p/-n {args.jobs}, "
          f"criu {criu.version_str} ({criu.path}), suite {suite.zdtm}; building...",
          file=sys.stderr, flush=True)
    build.ensure_built(suite, chosen)
    _prepare_upstream(suite)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZDTM_")}
    env["PATH"] = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

    report = work / "upstream-report"
    up_cmd = [*_upstream_prefix(suite, as_root, work), "run", "--keep-going", "-p", str(args.jobs),
              "-f", args.flavor, "--criu-bin", str(criu.path), "--report", str(report)]
    for t in chosen:
        up_cmd += ["-t", t.name]
    load0 = os.getloadavg()
    with upstream_alone(suite.test_dir):
        before = Before.take()
        try:
            up_wall, up_cpu, up_rc = _timed(up_cmd, suite.test_dir, env,
                                            work / "upstream.out")
        finally:
            for line in before.put_back():
                print(f"zdtm.py left: {line}", file=sys.stderr, flush=True)
    up = _tap_counts(report)

    junit = work / "zdtmpy.xml"
    py_cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n",
              str(args.jobs), "--rootdir", str(work), "-c", os.devnull,
              "--zdtm-suite", str(suite.zdtm), "--zdtm-flavor", args.flavor,
              "--zdtm-mode", "plain", "--zdtm-compress", "off", "--criu-bin", str(criu.path),
              "--zdtm-results", str(work / "zdtmpy-results"), "--junitxml", str(junit),
              "--zdtm-corpus-tests", " ".join(t.short for t in chosen),
              *(["--zdtm-as-root"] if as_root else []), str(work / "none")]
    (work / "none").mkdir(exist_ok=True)
    py_wall, py_cpu, py_rc = _timed(py_cmd, work, env, work / "zdtmpy.out")
    load1 = os.getloadavg()
    cases = parse_junit(junit) if junit.exists() else []
    ours = {"passed": 0, "failed": 0, "skipped": 0}
    for c in cases:
        ours[{"error": "failed"}.get(c.outcome, c.outcome)] += 1

    print(f"tests: {len(chosen)} upstream tests, flavor {args.flavor}, plain mode, "
          f"jobs {args.jobs}, criu {criu.version_str}"
          + (", kept as root (no CAP_SYS_RESOURCE)" if as_root else ""))
    print(f"zdtm.py -p {args.jobs}: wall {up_wall:8.1f} s  cpu {up_cpu:8.1f} s  "
          f"passed {up['passed']} failed {up['failed']} skipped {up['skipped']} "
          f"(exit {up_rc})")
    print(f"zdtmpy -n {args.jobs}:  wall {py_wall:8.1f} s  cpu {py_cpu:8.1f} s  "
          f"passed {ours['passed']} failed {ours['failed']} skipped {ours['skipped']} "
          f"(exit {py_rc})")
    ratio = py_wall / up_wall if up_wall > 0 else float("nan")
    print(f"ratio zdtmpy/zdtm.py: wall {ratio:.2f}x  cpu "
          f"{(py_cpu / up_cpu if up_cpu > 0 else float('nan')):.2f}x  (target wall <= 0.5x: "
          f"{'met' if ratio <= 0.5 else 'MISSED'})")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after "
          f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; logs in {work}")
    for line in parity.differences(parity.tap_results(report), parity.junit_results(cases)):
        print(line)
    return 0
