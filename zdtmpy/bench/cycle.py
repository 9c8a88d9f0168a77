"""Time zdtmpy's plain cycle at -n 1 and -n 2 and upstream zdtm.py, in one run, on this machine.

zdtmpy side: `pytest DESCS --zdtm-mode plain --zdtm-compress C... -p no:cacheprovider -q -n W`
from the repo root, W = 1 then 2, --repeat times. Stage timings per item come from the junit
XML (`zdtm_stage_<stage>_s` properties); criu's own dump/restore time from the last
timestamp of each kept criu log. Each run holds every descriptor --copies times (copies
are YAML twins of the descriptor under another name, same workload): with only 3 items,
-n 2 cannot show much.

Upstream side: bench/upstream_zdtm.sh runs test/zdtm.py (maps00, cow01) from the criu
source tree in the build cache, with the same criu binary.

Stage groups per item:
  build, start, dump, restore  the plugin's stages of those names (dump includes waiting for
                               the dumped tree to vanish)
  checks                       visible-state + oracle + verdict
  other                        every other stage (image transforms: none in plain-off)
  harness                      item time not inside any stage: pytest setup/teardown, skip
                               checks, test directory, cleanup and reaping
  overhead                     item time minus criu's own dump + restore time (from the logs;
                               the dump/restore stage times when a log is missing)
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..criu import Criu

from . import BenchError, JunitCase, Record, chart, figures, parse_junit

HELP = "time the plain cycle at -n 1 / -n 2 and upstream zdtm.py on this machine"

STAGE_GROUPS = {
    "build": ("build",),
    "start": ("start",),
    "dump": ("dump",),
    "restore": ("restore",),
    "checks": ("visible-state", "oracle", "verdict"),
}
GROUP_NAMES = (*STAGE_GROUPS, "other", "harness")
DESC_SUFFIXES = (".desc", ".yaml", ".yml")
_STAMP = re.compile(rb"^\((\d+\.\d+)\)", re.MULTILINE)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="runs per worker count, and upstream runs per test (default 3)")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    p.add_argument("--upstream", action=argparse.BooleanOptionalAction, default=True,
                   help="also time upstream zdtm.py via bench/upstream_zdtm.sh (default: on)")
    p.add_argument("--criu-bin", metavar="PATH",
                   help="criu for both sides (default: the one zdtmpy finds)")
    p.add_argument("--compress", default="all", metavar="LIST",
                   help="comma-separated compression settings per item (default 'all' = "
                        "off,page,region64k,region256k,region4m: with --copies 1 the default "
                        "plain matrix, `pytest zdtmpy/descs --zdtm-mode plain`, issue 13's "
                        "figure)")
    p.add_argument("--copies", type=int, default=1, metavar="K",
                   help="each descriptor K times per run, for more work to share (default 1 "
                        "= the zdtmpy/descs/ directory itself)")
    p.add_argument("--workers", default="1,2", metavar="LIST",
                   help="xdist worker counts to compare, comma-separated (default 1,2)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="one unrecorded run first, so workload builds are cached (default: on)")
    p.add_argument("--upstream-tests", default="maps00 cow01", metavar="NAMES",
                   help="zdtm/static tests for the upstream side (default: 'maps00 cow01')")
    chart.add_argument(p)
    p.add_argument("--root", metavar="DIR",
                   help="zdtmpy checkout holding zdtmpy/descs/ and bench/ (default: found from "
                        "the current directory or the package)")


# -- where things are ---------------------------------------------------------------------

def find_root(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else [Path.cwd(), Path(__file__).resolve().parents[2]]
    for c in candidates:
        if (c / "zdtmpy" / "descs").is_dir() and (c / "pyproject.toml").is_file():
            return c.resolve()
    where = " or ".join(str(c) for c in candidates)
    raise BenchError(f"no zdtmpy checkout (zdtmpy/descs/ and pyproject.toml) at {where}; "
                     "run from the repository root or pass --root")


def resolve_criu(explicit: str | None) -> Criu:
    from ..criu import find_criu

    return find_criu(explicit)  # CriuNotFound is a ZdtmError: the CLI prints it


def make_copies(src: Path, dst: Path, copies: int) -> dict[str, str]:
    """Write each descriptor of `src` `copies` times into `dst` (named *descs*, so the plugin
    collects YAML there). Returns {descriptor name: original test name}."""
    import yaml

    from .. import descriptor

    dst.mkdir(parents=True, exist_ok=True)
    names = {}
    files = sorted(p for p in src.iterdir() if p.suffix in DESC_SUFFIXES)
    if not files:
        raise BenchError(f"{src}: no descriptors (*.desc, *.yaml)")
    for path in files:
        desc = descriptor.load(path)  # validates, and knows the workload's default name
        text = path.read_text()
        raw = (yaml.safe_load(text) if path.suffix != ".desc" else ast.literal_eval(text)) or {}
        raw["workload"] = desc.workload  # a copy's name is not its workload's name
        for k in range(1, copies + 1):
            name = desc.name if k == 1 else f"{desc.name}_c{k}"
            (dst / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=True))
            names[name] = desc.name
    return names


# -- zdtmpy side --------------------------------------------------------------------------

def criu_log_seconds(log: Path) -> float | None:
    """criu's own run time: the last "(SS.uuuuuu)" stamp of its log."""
    try:
        data = log.read_bytes()
    except OSError:
        return None
    stamps = _STAMP.findall(data)
    return float(stamps[-1]) if stamps else None


def _item_dirname(name: str) -> str:
    # Same rule as the runner's test directory names.
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def item_record(case: JunitCase, names: dict[str, str], results: Path) -> Record:
    desc_name = case.name.split("[", 1)[0]
    stages = {k: float(v) for k, v in case.timings.items()}
    groups = {g: sum(stages.get(s, 0.0) for s in members) for g, members in STAGE_GROUPS.items()}
    known = {s for members in STAGE_GROUPS.values() for s in members}
    groups["other"] = sum(v for s, v in stages.items() if s not in known)
    groups["harness"] = case.time - sum(stages.values())
    workdir = results / _item_dirname(case.name)
    criu_dump = criu_log_seconds(workdir / "dump.log")
    criu_restore = criu_log_seconds(workdir / "restore.log")
    criu_total = ((criu_dump if criu_dump is not None else groups["dump"])
                  + (criu_restore if criu_restore is not None else groups["restore"]))
    return {
        "item": case.name,
        "test": names.get(desc_name, desc_name),
        "outcome": case.outcome,
        "message": case.message[:2000] if case.outcome != "passed" else "",
        "time": case.time,
        "stages": stages,
        "groups": groups,
        "criu_dump": criu_dump,
        "criu_restore": criu_restore,
        "overhead": case.time - criu_total,
    }


ALL_COMPRESS = "off,page,region64k,region256k,region4m"


def compress_args(settings: list[str]) -> list[str]:
    return [a for c in settings for a in ("--zdtm-compress", c)]


def run_pytest(root: Path, descs: Path, names: dict[str, str], workers: int, criu_path: str,
               work: Path, label: str, compress: list[str]) -> Record:
    junit = work / f"{label}.xml"
    results = work / f"{label}-results"
    out = work / f"{label}.out"
    timeline = work / f"{label}.timeline"
    cmd = [sys.executable, "-m", "pytest", str(descs),
           "-c", str(root / "pyproject.toml"), "--rootdir", str(root),
           "--zdtm-mode", "plain", *compress_args(compress), "-p", "no:cacheprovider", "-q",
           "-p", "zdtmpy.bench.cycle_timeline",
           "-n", str(workers), "--criu-bin", criu_path, "--junitxml", str(junit),
           # kept test directories give criu's logs; removed once read
           "--zdtm-keep", "--zdtm-results", str(results)]
    load = os.getloadavg()[0]
    cpu0 = _children_cpu()
    from .cycle_timeline import ENV

    env = {**os.environ, ENV: str(timeline)}
    start, began = time.monotonic(), time.time()
    with open(out, "wb") as fh:
        proc = subprocess.run(cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=fh,
                              stderr=subprocess.STDOUT, check=False, env=env)
    wall = time.monotonic() - start
    phases = timeline_phases(timeline, began, began + wall)
    cpu = _children_cpu() - cpu0
    if not junit.exists():
        raise BenchError(f"pytest wrote no junit report (exit {proc.returncode}); "
                         f"command: {' '.join(cmd)}\n{_tail(out)}")
    items = [item_record(c, names, results) for c in parse_junit(junit)]
    shutil.rmtree(results, ignore_errors=True)
    passed = [i for i in items if i["outcome"] == "passed"]
    if not passed:
        why = next((i["message"] for i in items if i["message"]), "")
        raise BenchError(f"no plain-cycle item passed in run {label} (pytest exit "
                         f"{proc.returncode}; {len(items)} items){': ' + why if why else ''}\n"
                         f"command: {' '.join(cmd)}\n{_tail(out)}")
    return {"label": label, "workers": workers, "wall": wall, "exit": proc.returncode,
            "cpu": cpu, "load": [load, os.getloadavg()[0]], "phases": phases,
            "command": cmd, "items": items, "output": str(out)}


def timeline_phases(path: Path, began: float, ended: float) -> Record | None:
    """From cycle_timeline's lines: start-up (run start to the first item's start), shutdown
    (the last item's end to the run's end) and tail (the first worker done to the last one
    done), in seconds; None when no item ran or the file is unreadable."""
    per_pid: dict[str, list[tuple[float, float]]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            pid, a, b = line.split()
            per_pid.setdefault(pid, []).append((float(a), float(b)))
        except ValueError:
            return None
    if not per_pid:
        return None
    lasts = [max(b for _, b in spans) for spans in per_pid.values()]
    return {"startup": min(a for spans in per_pid.values() for a, _ in spans) - began,
            "shutdown": ended - max(lasts), "tail": max(lasts) - min(lasts)}


def _children_cpu() -> float:
    """CPU seconds of every waited-for descendant so far: pytest, its workers, criu, and
    the restored tasks the workers reap as subreapers."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "--- last lines of pytest output ---\n" + "\n".join(text[-lines:])


# -- upstream side ------------------------------------------------------------------------

def parse_upstream_line(line: str) -> Record | None:
    """One `upstream key=value ...` run line of bench/upstream_zdtm.sh, or None."""
    words = line.split()
    if not words or words[0] != "upstream":
        return None
    rec: dict[str, Any] = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    for key in ("wall", "criu_dump", "criu_restore"):
        if key in rec:
            try:
                rec[key] = float(rec[key])
            except ValueError:
                rec[key] = None
    return rec


def run_upstream(root: Path, criu_path: str, repeat: int, tests: str) -> Record:
    script = root / "bench" / "upstream_zdtm.sh"
    if not script.is_file():
        return {"skipped": f"{script} not found"}
    if os.geteuid() != 0:
        return {"skipped": "upstream zdtm.py needs root"}
    cmd = ["bash", str(script), "--repeat", str(repeat), "--criu-bin", criu_path,
           "--tests", tests]
    print(f"bench: upstream: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=root, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    runs = [r for r in map(parse_upstream_line, proc.stdout.splitlines()) if r]
    if proc.returncode == 2 or not runs:
        err = proc.stderr.strip().splitlines()[-5:]
        return {"skipped": f"bench/upstream_zdtm.sh exited {proc.returncode}: "
                           + (" | ".join(err) or "no output")}
    if proc.returncode:
        print(proc.stderr, file=sys.stderr, end="")
    return {"command": cmd, "runs": runs}


def run(args: argparse.Namespace) -> int:
    from .cycle_summary import print_report, summarize

    if args.repeat < 1 or args.copies < 1:
        raise BenchError("--repeat and --copies want a positive integer")
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        raise BenchError(
            f"--workers wants comma-separated integers, got {args.workers!r}") from None
    if not workers or min(workers) < 1:
        raise BenchError(f"--workers wants positive worker counts, got {args.workers!r}")
    if os.geteuid() != 0:
        raise BenchError("the plain cycle checkpoints processes: run the benchmark as root")
    chart.require(args.chart)
    load_before = os.getloadavg()
    text = ALL_COMPRESS if args.compress == "all" else args.compress
    compress = [c.strip() for c in text.split(",") if c.strip()]
    root = find_root(args.root)
    criu = resolve_criu(args.criu_bin)
    work = Path(tempfile.mkdtemp(prefix="zdtmpy-bench-"))
    try:
        if args.copies == 1:
            descs, names = root / "zdtmpy" / "descs", {}
        else:
            descs = work / "descs"
            names = make_copies(root / "zdtmpy" / "descs", descs, args.copies)
        if args.warmup:
            print("bench: warm-up run (not recorded)", file=sys.stderr, flush=True)
            run_pytest(root, root / "zdtmpy" / "descs", {}, 1, str(criu.path), work, "warmup",
                       compress)
        runs = []
        for rep in range(1, args.repeat + 1):
            for w in workers:
                label = f"n{w}-r{rep}"
                print(f"bench: zdtmpy {label}", file=sys.stderr, flush=True)
                res = run_pytest(root, descs, names, w, str(criu.path), work, label, compress)
                print(f"bench:   {res['wall']:.2f} s, {len(res['items'])} items, "
                      f"pytest exit {res['exit']}", file=sys.stderr, flush=True)
                runs.append(res)
        upstream = None
        if args.upstream:
            upstream = run_upstream(root, str(criu.path), args.repeat, args.upstream_tests)
            if "skipped" in upstream:
                print(f"bench: upstream side skipped: {upstream['skipped']}", file=sys.stderr)
        summary = summarize(runs, upstream)
        print_report(summary, args.repeat, args.copies, criu, compress)
        if args.chart:
            figures.cycle(args.chart, summary, criu, load_before, args.upstream_tests)
        if args.json:
            doc = {
                "machine": {"kernel": platform.release(), "arch": platform.machine(),
                            "cpus": os.cpu_count()},
                "criu": {"path": str(criu.path), "version": criu.version_str},
                "config": {"repeat": args.repeat, "copies": args.copies, "workers": workers,
                           "warmup": args.warmup, "stage_groups": STAGE_GROUPS},
                "summary": summary,
                "zdtmpy_runs": [{k: v for k, v in r.items() if k != "output"} for r in runs],
                "upstream": upstream,
            }
            Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
            print(f"\nbench: wrote {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
