"""Time each cycle with criu driven by its command line and over RPC (criu swrk), in one run.

For each mode, `pytest DESCS --zdtm-mode M --zdtm-compress off --zdtm-criu-api API -n 1`
runs once per API per repetition, the two APIs alternating so load drifts hit both alike.
Per item: the whole item time and the criu stages (dump, restore, page-server, lazy-pages:
where criu runs, plus the RPC back end's own work); medians over items and repetitions.
CPU time is that of the pytest processes and everything they ran (criu included).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import BenchError, Record, fmt, median, parse_junit
from .cycle import find_root, resolve_criu

HELP = "time every cycle with criu over its command line and over RPC"
DEFAULT_MODES = "plain,page-server,page-server-criu,lazy,remote-lazy-criu"
CRIU_STAGES = ("dump", "restore", "page-server", "lazy-pages")
APIS = ("cli", "rpc")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modes", default=DEFAULT_MODES, metavar="LIST",
                   help=f"comma-separated modes (default {DEFAULT_MODES})")
    p.add_argument("--repeat", type=int, default=2, metavar="N",
                   help="runs per mode and API (default 2)")
    p.add_argument("--criu-bin", metavar="PATH", help="criu to drive (default: as zdtmpy finds)")
    p.add_argument("--root", metavar="DIR", help="zdtmpy checkout holding descs/")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(root: Path, mode: str, api: str, criu: str, work: Path, label: str) -> Record:
    junit = work / f"{label}.xml"
    cmd = [sys.executable, "-m", "pytest", str(root / "zdtmpy" / "descs"),
           "-c", str(root / "pyproject.toml"),
           "--rootdir", str(root), "--zdtm-mode", mode, "--zdtm-compress", "off",
           "--zdtm-criu-api", api, "-p", "no:cacheprovider", "-q", "-n", "1",
           "--criu-bin", criu, "--junitxml", str(junit),
           "--zdtm-results", str(work / f"{label}-results")]
    cpu, start = _children_cpu(), time.monotonic()
    with open(work / f"{label}.out", "wb") as out:
        proc = subprocess.run(cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, check=False, timeout=1800)
    wall, cpu = time.monotonic() - start, _children_cpu() - cpu
    if not junit.exists():
        raise BenchError(f"pytest wrote no junit report (exit {proc.returncode}); "
                         f"command: {' '.join(cmd)}")
    cases = parse_junit(junit)
    passed = [c for c in cases if c.outcome == "passed"]
    bad = [c for c in cases if c.outcome in ("failed", "error")]
    if bad or not passed:
        why = bad[0].message.splitlines()[0] if bad and bad[0].message else "nothing passed"
        raise BenchError(f"{mode} over {api}: {len(bad)} of {len(cases)} items failed "
                         f"({why}); the comparison needs every item green")
    return {"items": [c.time for c in passed],
            "criu": [sum(c.timings.get(s, 0.0) for s in CRIU_STAGES) for c in passed],
            "wall": wall, "cpu": cpu}


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise BenchError("the cycles checkpoint processes: run the benchmark as root")
    if args.repeat < 1:
        raise BenchError("--repeat wants a positive integer")
    from ..matrix import mode as check_mode

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if not check_mode(m).rpc:
            raise BenchError(f"mode {m} has no RPC cells (criu's RPC cannot drive it)")
    root = find_root(args.root)
    criu = resolve_criu(args.criu_bin)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="zdtmpy-bench-rpc-"))
    results: dict[tuple[str, str], Record] = {}   # (mode, api) -> runs summed
    try:
        _run(root, "plain", "cli", str(criu.path), work, "warmup")  # builds, caches
        for m in modes:
            for rep in range(args.repeat):
                for api in (APIS if rep % 2 == 0 else APIS[::-1]):
                    print(f"bench rpc: {m} over {api}, run {rep + 1}", file=sys.stderr,
                          flush=True)
                    r = _run(root, m, api, str(criu.path), work, f"{m}-{api}-{rep}")
                    acc = results.setdefault((m, api), {"items": [], "criu": [], "wall": 0.0,
                                                        "cpu": 0.0})
                    for k in ("items", "criu"):
                        acc[k] += r[k]
                    acc["wall"] += r["wall"]
                    acc["cpu"] += r["cpu"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"criu {criu.version_str} at {criu.path}; zdtmpy/descs x mode, compression off, -n 1, "
          f"{args.repeat} run(s) per mode and API")
    print(f"{'mode':<18}{'items':>6}{'item cli':>10}{'item rpc':>10}{'rpc/cli':>8}"
          f"{'criu cli':>10}{'criu rpc':>10}{'rpc/cli':>8}{'cpu cli':>9}{'cpu rpc':>9}")
    for m in modes:
        c, r = results[(m, "cli")], results[(m, "rpc")]
        ic, ir = median(c["items"]), median(r["items"])
        cc, cr = median(c["criu"]), median(r["criu"])
        print(f"{m:<18}{len(c['items']) // args.repeat:>6}{fmt(ic, 10)}{fmt(ir, 10)}"
              f"{(ir or 0) / ic if ic else 0:>8.2f}{fmt(cc, 10)}{fmt(cr, 10)}"
              f"{(cr or 0) / cc if cc else 0:>8.2f}{c['cpu']:>9.1f}{r['cpu']:>9.1f}")
    print("item / criu: median seconds per item (criu = dump + restore + page-server + "
          "lazy-pages stages); cpu: seconds of CPU of all runs of that API")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
          f", after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} "
          f"({os.cpu_count()} cpus)")
    return 0
