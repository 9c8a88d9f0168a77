"""Region blocks against per-page blocks on the same data: issue 13's "region never slower
than per-page", per pattern and direction, with what the coder itself costs per byte.

Per pattern and action: region's seconds over per-page's (wall and CPU, the files bench
compress timed), the difference in milliseconds, and the coder's own CPU per byte for each
layout, measured in memory on one thread (codecmem's coder_cpu_s: the chunks coded one
after the other, no pool, no files). When region is slower and its coder alone already
costs more per byte than per-page's, the line says so: LZ4 on large blocks searches a
64 KiB window (more candidates, each read from L2 rather than L1) where a page's search
stays within the page, and the bytes must stay python-lz4's, so that work is fixed.
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]
ACTIONS = ("compress", "decompress")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(result: Row) -> list[Row]:
    """One row per pattern with both layouts and per action: ratios, difference, verdict."""
    by = {(r["pattern"], r["mode"]): r for r in result["results"]}
    memory = {(m["pattern"], m["mode"]): m for m in result.get("memory", [])}
    region_kib = result.get("region_size", 0) >> 10
    out: list[Row] = []
    for (pattern, mode), region in by.items():
        page = by.get((pattern, "page"))
        if mode != "region" or page is None:
            continue
        mem_r, mem_p = memory.get((pattern, "region")), memory.get((pattern, "page"))
        for action in ACTIONS:
            r, p = region[action], page[action]
            coder = None
            if mem_r and mem_p and mem_r[action].get("coder_cpu_s") is not None:
                # per byte: the two layouts may have coded slightly different lengths
                coder = _ratio(mem_r[action]["coder_cpu_s"] / mem_r["bytes"],
                               mem_p[action]["coder_cpu_s"] / mem_p["bytes"])
            row: Row = {"pattern": pattern, "action": action,
                        "wall": _ratio(r["seconds"], p["seconds"]),
                        "cpu": _ratio(r["cpu_seconds"], p["cpu_seconds"]),
                        "coder_cpu": coder,
                        "diff_ms": (r["seconds"] - p["seconds"]) * 1e3,
                        "page_ms": p["seconds"] * 1e3}
            row["met"] = r["seconds"] <= p["seconds"]
            row["why"] = _why(row, region_kib)
            out.append(row)
    return out


def _why(row: Row, region_kib: int) -> str:
    if row["met"]:
        return ""
    coder = row["coder_cpu"]
    if coder is not None and coder > 1.0 and row["action"] == "compress":
        return (f"LZ4 itself costs {coder:.2f}x per byte on {region_kib} KiB blocks "
                "(coder on one core, in memory; the bytes are fixed)")
    if coder is not None and coder > 1.0:
        return (f"the coder costs {coder:.2f}x per byte on {region_kib} KiB blocks "
                "(one core, in memory)")
    return f"by {row['diff_ms']:.1f} ms of {row['page_ms']:.1f}"


def _f(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def lines(rows: list[Row]) -> list[str]:
    """The table, then one summary line (met / NOT met with the cells)."""
    if not rows:
        return []
    out = ["", "region vs per-page on the same data (region seconds / per-page's; target "
           "<= 1.00 by wall time; coder: CPU per byte of the coder alone, one core, "
           "in memory)",
           f"{'pattern':<8} {'action':<10} {'wall':>5} {'CPU':>5} {'coder':>5} "
           f"{'diff ms':>8}  verdict"]
    for r in rows:
        verdict = "ok" if r["met"] else f"NOT met: {r['why']}"
        out.append(f"{r['pattern']:<8} {r['action']:<10} {_f(r['wall'], '5.2f'):>5} "
                   f"{_f(r['cpu'], '5.2f'):>5} {_f(r['coder_cpu'], '5.2f'):>5} "
                   f"{r['diff_ms']:+8.1f}  {verdict}")
    slower = [f"{r['pattern']} {r['action']}" for r in rows if not r["met"]]
    out.append("region never slower than per-page: "
               + ("met" if not slower else f"NOT met ({', '.join(slower)})"))
    return out
