"""The compress benchmark's rows, targets and table (and an optional chart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import Record
from . import compress_layouts as layouts
from .compress_bounds import verdict

# ratios to the lz4 CLI on the same data in the same run (issue 13's targets)
TARGETS: dict[str, Any] = {"compress": {"page": 1.5, "region": 2.5}, "decompress": 3.0,
                          "rss_mib": 128, "memory": 1.6}


def mbps(nbytes: int, seconds: float | None) -> float | None:
    return nbytes / seconds / 1e6 if seconds else None


def div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _f(value: float | None, spec: str = "8.1f", width: int = 8) -> str:
    return format(value, spec) if value is not None else "-".rjust(width)


def make_row(name: str, mode: str, size: int, c: Record, d: Record,
             ref: Record | None) -> Record:
    row: Record = {
        "pattern": name, "mode": mode, "bytes": size,
        "bytes_after": c["after"], "ratio": size / c["after"] if c["after"] else None,
        "compress": {"seconds": c["seconds"], "cpu_seconds": c["cpu_seconds"],
                     "mbps": mbps(size, c["seconds"]), "rss_mib": c["rss_kib"] / 1024,
                     "pages_kept": c.get("pages_kept", False)},
        "decompress": {"seconds": d["seconds"], "cpu_seconds": d["cpu_seconds"],
                       "mbps": mbps(size, d["seconds"]), "rss_mib": d["rss_kib"] / 1024,
                       "pages_kept": d.get("pages_kept", False)},
    }
    vs: dict[str, float | None] = {}
    cpu: dict[str, float | None] = {}
    for action in ("compress", "decompress"):
        vs[action] = div(ref[action]["seconds"], row[action]["seconds"]) if ref else None
        # CPU seconds per byte, lz4's over ours: what a busy machine does not skew as much
        cpu[action] = div(ref[action].get("cpu_seconds"), row[action]["cpu_seconds"]) \
            if ref else None
    row["vs_lz4"] = vs
    row["vs_lz4_cpu"] = cpu
    want_c = TARGETS["compress"][mode]
    rss = max(row["compress"]["rss_mib"], row["decompress"]["rss_mib"])
    # RSS target: < 128 MiB for 1 GiB; smaller sets are held to the same bound
    row["targets"] = {
        "compress": vs["compress"] >= want_c if vs["compress"] is not None else None,
        "decompress": (vs["decompress"] >= TARGETS["decompress"]
                       if vs["decompress"] is not None else None),
        "rss": rss < TARGETS["rss_mib"],
    }
    return row


def row_line(r: Record) -> str:
    vs = r["vs_lz4"]
    return (f"  {r['pattern']} {r['mode']}: ratio {_f(r['ratio'], '.2f', 1)}, "
            f"compress {_f(r['compress']['mbps'], '.0f', 1)} MB/s "
            f"(x{_f(vs['compress'], '.2f', 1)} lz4), decompress "
            f"{_f(r['decompress']['mbps'], '.0f', 1)} MB/s (x{_f(vs['decompress'], '.2f', 1)})")


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("ok" if ok else "MISS")


def table(result: Record) -> str:
    lines: list[str] = []
    cmd = result["lz4_cli"]["command"]
    ref_cmd = " ".join([Path(cmd[0]).name, *cmd[1:]]) if cmd else "none"
    lines.append(f"data: {result['size'] >> 20} MiB per pattern, region "
                 f"{result['region_size'] >> 10} KiB, {result['cpus']} CPUs; reference: "
                 f"{ref_cmd}"
                 f" (lz4 {result['lz4_cli']['version'] or '?'}), times include fsync")
    before, after = result.get("loadavg_before"), result.get("loadavg_after")
    if before and after:
        lines.append(f"load average before/after: {before[0]:.2f} / {after[0]:.2f} "
                     f"(other work on this machine skews wall times; CPU seconds are in the "
                     f"JSON); best of {result.get('repeat', 1)}"
                     + "".join(f", {name} +{n}" for name, n in
                               (result.get("more_rounds") or {}).items())
                     + (f" (times under {result.get('short_below_ms', 50):g} ms)"
                        if result.get("more_rounds") else ""))
    lines.append("")
    lines.append("reference      ratio  comp MB/s  decomp MB/s  RSS MiB")
    for name, ref in result["reference"].items():
        if ref is None:
            lines.append(f"{name:<12} {'-':>7} {'-':>10} {'-':>12} {'-':>8}")
            continue
        rss = max(ref["compress"]["rss_kib"], ref["decompress"]["rss_kib"]) / 1024
        lines.append(f"{name:<12} {ref['ratio']:7.2f} {ref['compress']['mbps']:10.0f} "
                     f"{ref['decompress']['mbps']:12.0f} {rss:8.1f}")
    lines.append("")
    hdr = (f"{'pattern':<8} {'mode':<7} {'ratio':>7} {'comp MB/s':>10} {'x lz4':>6} "
           f"{'cpu x':>6} {'decomp MB/s':>12} {'x lz4':>6} {'cpu x':>6} {'RSS c/d MiB':>12}  "
           "targets (comp, decomp, rss)")
    lines.append(hdr)
    met = total = 0
    for r in result["results"]:
        t = r["targets"]
        marks = [mark(t["compress"]), mark(t["decompress"]), mark(t["rss"])]
        met += sum(1 for v in t.values() if v)
        total += sum(1 for v in t.values() if v is not None)
        rss = f"{r['compress']['rss_mib']:.0f}/{r['decompress']['rss_mib']:.0f}"
        ratio = "inf" if r["bytes_after"] == 0 else _f(r["ratio"], "7.2f", 7)
        cpu = r.get("vs_lz4_cpu") or {}
        lines.append(f"{r['pattern']:<8} {r['mode']:<7} {ratio:>7} "
                     f"{_f(r['compress']['mbps'], '10.0f', 10)} "
                     f"{_f(r['vs_lz4']['compress'], '6.2f', 6)} "
                     f"{_f(cpu.get('compress'), '6.2f', 6)} "
                     f"{_f(r['decompress']['mbps'], '12.0f', 12)} "
                     f"{_f(r['vs_lz4']['decompress'], '6.2f', 6)} "
                     f"{_f(cpu.get('decompress'), '6.2f', 6)} {rss:>12}  "
                     f"{', '.join(marks)}")
    t = TARGETS
    lines.append("")
    lines.append(f"targets (x lz4, wall): compress page >= {t['compress']['page']}, region >= "
                 f"{t['compress']['region']}; decompress >= {t['decompress']}; peak RSS < "
                 f"{t['rss_mib']} MiB. Met: {met} of {total}. cpu x = lz4's CPU seconds / "
                 "ours (the same data)")
    lines += reach_lines(result)
    lines += layouts.lines(result.get("region_vs_page") or [])
    slower = region_slower(result["results"], "cpu_seconds")   # by wall: in the table above
    lines.append("region never slower than per-page (CPU seconds): "
                 + ("ok" if not slower else "MISS (" + ", ".join(slower) + ")"))
    lines += memory_lines(result.get("memory", []))
    return "\n".join(lines)


def region_slower(rows: list[dict[str, Any]], key: str = "seconds") -> list[str]:
    """Patterns and actions where region was slower than per-page: by wall time, or by CPU
    seconds (key "cpu_seconds", which other work on the machine skews less)."""
    by = {(r["pattern"], r["mode"]): r for r in rows}
    out = []
    for (pattern, mode), r in by.items():
        page = by.get((pattern, "page"))
        if mode != "region" or page is None:
            continue
        for action in ("compress", "decompress"):
            if r[action][key] > page[action][key]:
                out.append(f"{pattern} {action}")
    return out


def memory_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The in-memory table: the codec against python-lz4 on one core (the ceiling)."""
    if not rows:
        return []
    lines = ["", f"in memory vs python-lz4 block functions on one core (target >= "
             f"{TARGETS['memory']}x; x: wall ratio; cpu: CPU seconds ceiling / codec; cap: "
             "threads x cpu, the wall ratio our CPU cost allows with every core ours)",
             f"{'pattern':<8} {'mode':<7} {'block':>7} {'thr':>3} {'comp MB/s':>10} "
             f"{'ceil':>7} {'x':>5} {'cpu':>5} {'cap':>5} {'decomp MB/s':>12} {'ceil':>7} "
             f"{'x':>5} {'cpu':>5} {'cap':>5}  targets"]
    met = 0
    for r in rows:
        c, d = r["compress"], r["decompress"]
        met += c["met"] + d["met"]
        cap = [r["threads"] * a["cpu_ratio"] if a["cpu_ratio"] else None for a in (c, d)]
        lines.append(f"{r['pattern']:<8} {r['mode']:<7} {r['block'] >> 10:>6}K "
                     f"{r['threads']:>3} {c['codec_mbps']:10.0f} {c['ceiling_mbps']:7.0f} "
                     f"{c['ratio']:5.2f} {_f(c['cpu_ratio'], '5.2f', 5)} "
                     f"{_f(cap[0], '5.2f', 5)} "
                     f"{d['codec_mbps']:12.0f} {d['ceiling_mbps']:7.0f} {d['ratio']:5.2f} "
                     f"{_f(d['cpu_ratio'], '5.2f', 5)} {_f(cap[1], '5.2f', 5)}  "
                     f"{mark(c['met'])}, {mark(d['met'])}")
    lines.append(f"in-memory targets met: {met} of {2 * len(rows)} (a MISS under its cap "
                 "is the machine being busy: compare the load average above)")
    return lines


def reach_lines(result: dict[str, Any]) -> list[str]:
    """Per pattern, layout and direction: wall and CPU seconds of ours, of `lz4` and of
    python-lz4 on one core (in memory, scaled to the size), the ratio, the target and
    whether it is met or out of reach here (the bound: lz4's wall over the floor, see
    compress_bounds)."""
    rows = [r for r in result["results"] if "bounds" in r]
    if not rows:
        return []
    memory = {(m["pattern"], m["mode"]): m for m in result.get("memory", [])}
    lines = ["", "per direction: seconds wall / CPU (ours, lz4 CLI), python-lz4's CPU seconds "
             "on one core, the floor under any codec here (write / LZ4 CPU over the cores) "
             "and the bound it puts on x lz4",
             f"{'pattern':<8} {'mode':<7} {'action':<10} {'ours':>12} {'lz4':>12} "
             f"{'py-lz4':>7} {'x lz4':>6} {'cpu x':>6} {'target':>6} {'floor w/cpu':>12} "
             f"{'bound':>6}  verdict"]
    met = total = far = 0
    for r in rows:
        mem = memory.get((r["pattern"], r["mode"]))
        ref = result["reference"].get(r["pattern"])
        for action in ("compress", "decompress"):
            ours, b = r[action], r["bounds"][action]
            target = TARGETS["compress"][r["mode"]] if action == "compress" \
                else TARGETS["decompress"]
            lib = (mem[action]["ceiling_cpu_s"] * r["bytes"] / mem["bytes"]
                   if mem and mem.get("bytes") else None)
            theirs = (f"{ref[action]['seconds']:.2f}/{ref[action]['cpu_seconds']:.2f}"
                      if ref else "-")
            v = verdict(r["targets"][action], b["bound"], target)
            met += v == "ok"
            far += v == "out of reach"
            total += v != "n/a"
            floor = f"{_f(b['write_floor_s'], '.2f', 1)}/{_f(b['cpu_floor_s'], '.2f', 1)}"
            # every block raw: the pages file stayed, no write (only the pagemap changed)
            kept = " (pages file kept)" if ours.get("pages_kept") else ""
            lines.append(f"{r['pattern']:<8} {r['mode']:<7} {action:<10} "
                         f"{ours['seconds']:5.2f}/{ours['cpu_seconds']:<6.2f} {theirs:>12} "
                         f"{_f(lib, '7.2f', 7)} {_f(r['vs_lz4'][action], '6.2f', 6)} "
                         f"{_f(r['vs_lz4_cpu'][action], '6.2f', 6)} {target:6.1f} "
                         f"{floor:>12} {_f(b['bound'], '6.2f', 6)}  {v}{kept}")
    lines.append(f"met {met} of {total}; out of reach on this machine (bound below the "
                 f"target): {far}; cores {result.get('cpus')}")
    return lines
