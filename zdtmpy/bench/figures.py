"""One figure per benchmark kind, all drawn by `chart.bars` (data in, PNG out).

Each takes the figures its benchmark printed, the load average from before the run and the
criu it used, and names the reference the figures are compared with.
"""

from __future__ import annotations

import argparse
import statistics
from typing import TYPE_CHECKING

from . import Record
from .chart import Facts, bars

if TYPE_CHECKING:
    from ..criu import Criu

Load = tuple[float, float, float]   # os.getloadavg() before the run


def compress(path: str, result: Record) -> None:
    """Codec speed over the lz4 CLI's, per pattern and mode."""
    from .compress_table import TARGETS

    rows = result["results"]
    lz4 = result.get("lz4_cli") or {}
    cmd = lz4.get("command")
    cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
    facts = Facts(reference=f"lz4 CLI (`{cmd or 'not found'}`, {lz4.get('version') or '?'}), "
                            "the same data file to file",
                  load_before=tuple(result["loadavg_before"]),
                  load_after=tuple(result["loadavg_after"]))
    bars(path, title=f"zdtmpy LZ4 speed / lz4 CLI, {result['size'] >> 20} MiB per pattern",
         groups=[f"{r['pattern']}\n{r['mode']}" for r in rows],
         series={"compress": [r["vs_lz4"]["compress"] for r in rows],
                 "decompress": [r["vs_lz4"]["decompress"] for r in rows]},
         ylabel="speed / lz4 CLI (higher is better)", facts=facts,
         lines={"lz4 CLI = 1": 1.0,
                f"decompress target {TARGETS['decompress']}x": TARGETS["decompress"]})


def cycle(path: str, summary: Record, criu: Criu, load_before: Load,
          upstream_tests: str) -> None:
    """Seconds per test: zdtmpy's item time and run wall per item against upstream's."""
    z, up = summary["zdtmpy"], summary["upstream"] or {}
    groups, wall, overhead = [], [], []
    if 1 in z:
        groups.append("zdtmpy item\n(-n 1)")
        wall.append(z[1]["all"]["time"])
        overhead.append(z[1]["all"]["overhead"])
    for w, zw in z.items():
        groups.append(f"zdtmpy run wall\nper item (-n {w})")
        wall.append(zw["run_wall"] / zw["items_per_run"] if zw["items_per_run"] else None)
        overhead.append(None)
    lines = {}
    if up.get("wall"):
        groups.append("upstream zdtm.py\nper test")
        wall.append(up["wall"])
        overhead.append(up.get("overhead"))
        lines["upstream per test"] = up["wall"]
        reference = f"upstream zdtm.py ({upstream_tests}) with the same criu {criu.version_str}"
    else:
        reference = f"none: upstream zdtm.py skipped ({up.get('skipped', 'not run')})"
    bars(path, title=f"plain cycle, criu {criu.version_str}: seconds per test (medians)",
         groups=groups, series={"wall": wall, "overhead (not criu)": overhead},
         ylabel="seconds (lower is better)", facts=Facts(reference, load_before), lines=lines)


def page_server(path: str, args: argparse.Namespace, criu: Criu, names: list[str],
                summary: Record, base_t: float, load_before: Load) -> None:
    """Dump time through each page server over criu's own."""
    from .pageserver import TARGET_RATIO

    bars(path, title=f"dump through a page server, bigmix {args.mib} MiB, median of "
                     f"{args.repeat}",
         groups=names, series={"dump time / criu page-server":
                               [summary[n]["ratio"] for n in names]},
         ylabel="dump time / criu page-server (lower is better)",
         facts=Facts(f"criu {criu.version_str} page-server writing plain images "
                     f"({base_t:.3f} s)", load_before),
         lines={"criu page-server = 1": 1.0, f"target {TARGET_RATIO}x": TARGET_RATIO})


def stream(path: str, args: argparse.Namespace, criu: Criu, plain: list[Record],
           streamed: list[Record], load_before: Load) -> None:
    """criu --stream through zdtmpy's streamer over a dump to / restore from a directory."""
    from .stream import DUMP_TARGET, RESTORE_TARGET

    def med(rows: list[Record], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    keys = {"dump": "dump", "restore": "restore", "image bytes": "bytes"}
    bars(path, title=f"criu --stream through zdtmpy's streamer ({args.compression.name}), "
                     f"{args.size} MiB, median of {args.repeat}",
         groups=list(keys), series={"stream / plain directory": [
             med(streamed, k) / med(plain, k) for k in keys.values()]},
         ylabel="stream / plain directory (lower is better)",
         facts=Facts(f"criu {criu.version_str} dump/restore to a plain image directory "
                     f"(dump {med(plain, 'dump'):.2f} s, restore {med(plain, 'restore'):.2f} s)",
                     load_before),
         lines={"plain directory = 1": 1.0, f"dump target {DUMP_TARGET}x": DUMP_TARGET,
                f"restore target {RESTORE_TARGET}x": RESTORE_TARGET})
