"""bench cycle's summary: per worker count and test, against upstream zdtm.py, and its report."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..criu import Criu

from . import Record, fmt, median
from .cycle import GROUP_NAMES

N2_TARGET = 1.8   # issue 13: -n 2 vs -n 1 on the default plain matrix


def summarize_items(items: list[Record]) -> Record:
    ok = [i for i in items if i["outcome"] == "passed"]
    return {
        "items": len(ok),
        "time": median(i["time"] for i in ok),
        **{g: median(i["groups"][g] for i in ok) for g in GROUP_NAMES},
        "criu_dump": median(i["criu_dump"] for i in ok),
        "criu_restore": median(i["criu_restore"] for i in ok),
        "overhead": median(i["overhead"] for i in ok),
    }


def summarize(runs: list[Record], upstream: Record | None) -> Record:
    out: dict[str, Any] = {"zdtmpy": {}, "upstream": None, "ratios": {}}
    for w in sorted({r["workers"] for r in runs}):
        mine = [r for r in runs if r["workers"] == w]
        items = [i for r in mine for i in r["items"]]
        tests = sorted({i["test"] for i in items})
        out["zdtmpy"][w] = {
            "run_wall": median(r["wall"] for r in mine),
            "run_walls": [r["wall"] for r in mine],
            "run_cpu": median(r.get("cpu") for r in mine),
            "loads": [ld for r in mine for ld in r.get("load", [])],
            "items_per_run": median(len(r["items"]) for r in mine),
            # what -n cannot share: interpreter and xdist start-up, collection, idle workers
            "outside_items": median(r["wall"] - sum(i["time"] for i in r["items"]) / w
                                    for r in mine),
            # its parts, from the item timeline (cycle_timeline)
            **{phase: median((r.get("phases") or {}).get(phase) for r in mine)
               for phase in ("startup", "shutdown", "tail")},
            "failed": sum(i["outcome"] in ("failed", "error") for i in items),
            "first_failures": [f"{i['item']}: {' / '.join(i['message'].split(chr(10))[:2])[:300]}"
                               for i in items if i["outcome"] in ("failed", "error")
                               and i["message"].strip()][:3],
            "skipped": sum(i["outcome"] == "skipped" for i in items),
            "per_test": {t: summarize_items([i for i in items if i["test"] == t]) for t in tests},
            "all": summarize_items(items),
        }
    z = out["zdtmpy"]
    if 1 in z and 2 in z and z[2]["run_wall"]:
        out["ratios"]["n1_over_n2_run_wall"] = z[1]["run_wall"] / z[2]["run_wall"]
        if z[2]["run_cpu"]:
            # the most -n 2 could give if it kept every CPU busy with the CPU it used
            out["ratios"]["n1_over_n2_cpu_ceiling"] = (
                z[1]["run_wall"] / (z[2]["run_cpu"] / _cpus()))
    if upstream and upstream.get("runs"):
        ok = [r for r in upstream["runs"] if r.get("result") == "PASS"]
        per = {}
        for t in sorted({r["test"] for r in upstream["runs"]}):
            rs = [r for r in ok if r["test"] == t]
            per[t] = {
                "flavor": next((r["flavor"] for r in upstream["runs"] if r["test"] == t), ""),
                "runs": len(rs),
                "failed": sum(r["test"] == t and r.get("result") != "PASS"
                              for r in upstream["runs"]),
                "wall": median(r["wall"] for r in rs),
                "criu_dump": median(r.get("criu_dump") for r in rs),
                "criu_restore": median(r.get("criu_restore") for r in rs),
                "overhead": median(r["wall"] - (r.get("criu_dump") or 0)
                                   - (r.get("criu_restore") or 0) for r in rs),
            }
        all_walls = median(r["wall"] for r in ok)
        out["upstream"] = {"per_test": per, "wall": all_walls,
                           "overhead": median(p["overhead"] for p in per.values())}
        base = z.get(1)
        if all_walls and base:
            amort1 = base["run_wall"] / base["items_per_run"]
            out["ratios"]["upstream_test_over_zdtmpy_item"] = all_walls / base["all"]["time"]
            out["ratios"]["upstream_test_over_zdtmpy_amortized_n1"] = all_walls / amort1
            if 2 in z:
                amort2 = z[2]["run_wall"] / z[2]["items_per_run"]
                out["ratios"]["upstream_test_over_zdtmpy_amortized_n2"] = all_walls / amort2
            if base["all"]["overhead"] and out["upstream"]["overhead"]:
                out["ratios"]["upstream_overhead_over_zdtmpy_overhead"] = (
                    out["upstream"]["overhead"] / base["all"]["overhead"])
    elif upstream:
        out["upstream"] = {"skipped": upstream.get("skipped", "no result")}
    return out


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def print_report(summary: Record, repeat: int, copies: int, criu: Criu,
                 compress: list[str] | None = None) -> None:
    from .cycle import ALL_COMPRESS

    p = print
    p(f"\nzdtmpy bench cycle: criu {criu.version_str} ({criu.path}); kernel "
      f"{platform.release()}, {os.cpu_count()} CPUs; {repeat} run(s) per worker count, "
      f"each descriptor x{copies} per run")
    if compress is not None:
        default = copies == 1 and ",".join(compress) == ALL_COMPRESS
        p(f"matrix: zdtmpy/descs x --zdtm-mode plain x compress {','.join(compress)}"
          + (" = the default plain matrix (issue 13's figure)" if default else
             " (NOT the default plain matrix: --compress all --copies 1 is)"))
    cols = ("items", "time", *GROUP_NAMES, "criu_dump", "criu_restore", "overhead")
    head = ("item", "build", "start", "dump", "restore", "checks", "other", "harness",
            "criu-d", "criu-r", "ovrhead")
    for w, z in summary["zdtmpy"].items():
        p(f"\nzdtmpy plain cycle, -n {w}: per-item medians [s] (a column's median; they need "
          "not add up)")
        p(f"{'test':<12}{'n':>4} " + " ".join(f"{h:>7}" for h in head))
        rows = [*z["per_test"].items(), ("all", z["all"])]
        for name, s in rows:
            p(f"{name:<12}{s['items']:>4} " + " ".join(fmt(s[c]) for c in cols[1:]))
        walls = ", ".join(f"{x:.2f}" for x in z["run_walls"])
        p(f"whole run: median {z['run_wall']:.2f} s for {z['items_per_run']:.0f} items "
          f"({z['run_wall'] / z['items_per_run']:.3f} s/item amortized); runs: {walls}"
          + (f"; {z['failed']} failed" if z["failed"] else "")
          + (f"; {z['skipped']} skipped" if z["skipped"] else ""))
        p(f"outside items (run wall - item times / {w}): median {z['outside_items']:.2f} s"
          + (f"; start-up until the first item {z['startup']:.2f} s, after the last item "
             f"{z['shutdown']:.2f} s, workers' tail {z['tail']:.2f} s"
             if z.get("startup") is not None else ""))
        if z.get("run_cpu") is not None:
            loads = z.get("loads") or [0.0]
            p(f"CPU (pytest, workers, criu, workloads): median {z['run_cpu']:.2f} s per run "
              f"({z['run_cpu'] / z['run_wall']:.2f} of {_cpus()} CPUs busy); "
              f"load average {min(loads):.1f}-{max(loads):.1f} over the runs")
        for first in z["first_failures"]:
            p(f"  failed: {first}")
    up = summary["upstream"]
    if up and "per_test" in up:
        p("\nupstream zdtm.py (one process per test), medians [s]")
        p(f"{'test':<22}{'flavor':>7}{'runs':>5} {'wall':>7} {'criu-d':>7} {'criu-r':>7} "
          f"{'ovrhead':>7}")
        for t, s in up["per_test"].items():
            p(f"{t:<22}{s['flavor']:>7}{s['runs']:>5} {fmt(s['wall'])} {fmt(s['criu_dump'])} "
              f"{fmt(s['criu_restore'])} {fmt(s['overhead'])}"
              + (f"  ({s['failed']} failed)" if s["failed"] else ""))
    elif up:
        p(f"\nupstream zdtm.py: skipped: {up['skipped']}")
    r = summary["ratios"]
    p("\nratios")
    if "n1_over_n2_run_wall" in r:
        v = r["n1_over_n2_run_wall"]
        p(f"  whole run -n 1 / -n 2: {v:.2f}x (target >= {N2_TARGET}x: "
          f"{'met' if v >= N2_TARGET else 'NOT met'}; wall time, {os.cpu_count()} CPUs "
          "shared with whatever else runs: see the load average)")
    if "n1_over_n2_cpu_ceiling" in r:
        p(f"  ceiling with the CPU -n 2 used, every CPU busy from start to end: "
          f"{r['n1_over_n2_cpu_ceiling']:.2f}x (-n 1 wall / (-n 2 CPU / {_cpus()} CPUs)); "
          "below it: start-up and waits that no second worker fills")
    names = {
        "upstream_test_over_zdtmpy_item": "upstream test wall / zdtmpy item time (-n 1)",
        "upstream_test_over_zdtmpy_amortized_n1":
            "upstream test wall / zdtmpy run wall per item (-n 1)",
        "upstream_test_over_zdtmpy_amortized_n2":
            "upstream test wall / zdtmpy run wall per item (-n 2)",
        "upstream_overhead_over_zdtmpy_overhead": "upstream overhead / zdtmpy overhead per test",
    }
    for key, text in names.items():
        if key in r:
            p(f"  {text}: {r[key]:.2f}x")


