"""Time zdtmpy's LZ4 page compression against the lz4 command-line tool, in one run.

For each data pattern a synthetic image layer (one pagemap, plain pages file of --size
bytes) is written to a temporary directory on disk. Then, each measured in a child process
of its own (wall time of the call, peak RSS from wait4):

  reference   `lz4 -1 -T1` (`lz4 -1` where -T is not supported) on the pages file, then
              `lz4 -d` of its output; each output is fsynced and the fsync is timed too
  page        compress_dir(per-page) then decompress_dir, in place (both fsync their output)
  region      the same with region blocks of --region-size (default 256 KiB)

Every decompression is checked against the original pages (CRC-32) outside the timings.
Before each measurement its input is read through (all of it in the page cache, holes
included, for every reader alike) and `os.sync()` runs (no earlier write flushed in it).
MB/s are 10^6 bytes of uncompressed data per second. Ratios "x lz4" are our speed divided by
the reference's on the same data in the same run. Targets (ratio to the reference):
region compress >= 2.5, per-page compress >= 1.5, decompress >= 3.0, peak RSS < 128 MiB;
region never slower than per-page (zdtmpy.bench.compress_layouts). CPU-second ratios are
printed beside the wall ratios, and the codec in memory against python-lz4 on one core
(zdtmpy.bench.codecmem). Per pattern, layout and direction a second table gives wall and
CPU seconds of ours, of lz4 and of python-lz4 on one core, and the floor under any codec's
wall time here (writing the output, the LZ4 library's CPU over the cores:
zdtmpy.bench.compress_bounds): a target above lz4's time over that floor is marked out of
reach, with the figures that show it.

Patterns: zero; mixed (runs of 1-64 pages: 50% zero, 25% repeated text, 25% random);
random; text (generated log-like lines); elf (system binaries from /usr/bin and /usr/lib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TextIO, cast

from . import BenchError, Record, chart, figures
from .compress_bounds import add_bounds, stored_bytes, write_floor
from .compress_layouts import compare as compare_layouts
from .compress_ref import lz4_command, lz4_reference, lz4_version, run_timed, warm
from .compress_table import TARGETS, make_row, mbps, row_line, table
from .patterns import PAGE, PATTERNS, file_crc, make_dataset, pattern_pieces


class Log(Protocol):
    """Where progress goes: print, or a caller's print-like function."""

    def __call__(self, *values: object, file: TextIO | None = None) -> None: ...


HELP = "LZ4 page compression (per-page, region) vs the lz4 CLI on synthetic images"

MODES = ("page", "region")
PAGEMAP = "pagemap-1.img"
PAGES = "pages-1.img"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="1G", metavar="SIZE",
                   help="uncompressed bytes per pattern, e.g. 64M, 1G (default 1G)")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    chart.add_argument(p)
    p.add_argument("--patterns", default=",".join(PATTERNS), metavar="LIST",
                   help=f"comma-separated subset of {','.join(PATTERNS)} (default: all)")
    p.add_argument("--modes", default=",".join(MODES), metavar="LIST",
                   help="comma-separated subset of page,region (default: both)")
    p.add_argument("--region-size", default="256K", metavar="SIZE",
                   help="region block size for region mode (default 256K)")
    p.add_argument("--tmpdir", metavar="DIR",
                   help="where the data sets are written (default /var/tmp, else /tmp)")
    p.add_argument("--lz4", default="lz4", metavar="PATH", help="the lz4 tool (default lz4)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="measure everything N times and keep the fastest of each; with N > 1, "
                        "a pattern where a time is under --short-below gets 4 more rounds "
                        "(default 1)")
    p.add_argument("--short-below", type=float, default=SHORT_MS, metavar="MS",
                   help=f"what --repeat counts as a short time (default {SHORT_MS:g} ms)")


# -- sizes and output -------------------------------------------------------------------

def parse_bytes(text: str) -> int:
    """The codec's one size grammar, failing as a BenchError."""
    from ..codec import parse_size
    from ..errors import ImageError

    try:
        return parse_size(text)
    except ImageError as exc:
        raise BenchError(str(exc)) from None


# -- measuring a child --------------------------------------------------------------------

def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the zdtmpy that runs this bench
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                else "")
    return env


def child_main(argv: list[str]) -> int:
    """In the child: one conversion, timed; prints a JSON line."""
    from ..codec import Compression
    from ..codec.spec import Layout
    from ..compress import compress_dir, decompress_dir

    action, path, mode, region = argv
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    # the CLI's default: originals kept as .bak (the caller removes them, untimed)
    if action == "compress":
        layout = cast("Layout", mode)   # the parent passes one of MODES
        spec = Compression(layout, region_size=int(region))
        r = compress_dir(path, spec, progress=False)
    else:
        r = decompress_dir(path, progress=False)
    seconds = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    hwm = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "before": r.bytes_before,
                      "after": r.bytes_after, "changed": r.changed, "hwm_kib": hwm}))
    return 0


_CHILD = ("import sys; from zdtmpy.bench.compress import child_main; "
          "sys.exit(child_main(sys.argv[1:]))")


def convert(action: str, path: Path, mode: str, region: int) -> Record:
    warm(path / PAGES)   # the same page-cache state for every reader (compress_ref.warm)
    os.sync()
    ino = os.stat(path / PAGES).st_ino
    argv = [sys.executable, "-c", _CHILD, action, str(path), mode, str(region)]
    rc, out, err, _, maxrss = run_timed(argv, _child_env())
    if rc != 0:
        raise BenchError(f"{action} {path} ({mode}) failed (exit {rc}): "
                         f"{err.decode(errors='replace').strip()[-2000:]}")
    rec: Record = json.loads(out.decode().strip().splitlines()[-1])
    if not rec["changed"]:
        raise BenchError(f"{action} {path} ({mode}) changed nothing")
    rec["rss_kib"] = rec["hwm_kib"] or maxrss
    # the same pages file: nothing in it changed (every block raw), only the pagemap was
    # rewritten; the table says so next to the figures
    rec["pages_kept"] = os.stat(path / PAGES).st_ino == ino
    for bak in Path(path).glob("*.bak"):
        bak.unlink()
    return rec


# -- the run ---------------------------------------------------------------------------------

def _list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise BenchError(f"--{what}: {', '.join(bad) or 'nothing given'}; "
                         f"choose from {','.join(allowed)}")
    return items


def _tmp_base(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    for d in ("/var/tmp", "/tmp"):
        if os.path.isdir(d) and os.access(d, os.W_OK):
            return Path(d)
    return Path(tempfile.gettempdir())


def measure(size: int, patterns: list[str], modes: list[str], region: int,
            tmpdir: str | None, tool: str = "lz4", repeat: int = 1, log: Log = print,
            short_ms: float = 50.0) -> Record:
    """Run the benchmark; returns the JSON-able result dict."""
    from ..codec import Compression

    Compression("region", region_size=region)  # validates the region size
    size -= size % PAGE
    if size <= 0:
        raise BenchError("--size must be at least one page")
    base = _tmp_base(tmpdir)
    need = 3 * size + (64 << 20)
    free = shutil.disk_usage(base).free
    if free < need:
        raise BenchError(f"{base}: {free >> 20} MiB free, the benchmark needs about "
                         f"{need >> 20} MiB (use --tmpdir or a smaller --size)")
    cmd = lz4_command(tool)
    if cmd is None:
        log(f"warning: {tool} not found: no reference figures", file=sys.stderr)
    result: Record = {
        "size": size, "region_size": region, "cpus": os.cpu_count(),
        "python": platform.python_version(), "machine": platform.machine(),
        "python_lz4": _python_lz4_version(),
        "lz4_cli": {"command": cmd, "version": lz4_version(tool) if cmd else None},
        "targets": TARGETS, "repeat": repeat, "loadavg_before": os.getloadavg(),
        "reference": {}, "results": [], "memory": [], "more_rounds": {},
        "short_below_ms": short_ms,
    }
    work = Path(tempfile.mkdtemp(prefix="zdtmpy-bench-compress-", dir=base))
    try:
        for name in patterns:
            layer = work / name
            t0 = time.perf_counter()
            crc = make_dataset(layer, name, size)
            log(f"{name}: {size >> 20} MiB written in {time.perf_counter() - t0:.1f}s",
                file=sys.stderr)
            ref: Record | None = None
            ours: dict[str, Record] = {}
            for rnd in range(repeat):  # keep the fastest of each measurement
                if cmd:
                    ref = _best(ref, lz4_reference(cmd, layer / PAGES, work, crc))
                _convert_all(layer, name, modes[::-1] if rnd % 2 else modes, region, crc,
                             ours)
            # a few milliseconds (a kept pages file) are mostly the scheduler's and the
            # disk's noise: with --repeat, more rounds of every layout, compared fairly
            if repeat > 1 and any(ours[m][a]["seconds"] * 1e3 < short_ms
                                  for m in modes for a in ours[m]):
                for rnd in range(SHORT_EXTRA):
                    _convert_all(layer, name, modes[::-1] if rnd % 2 else modes, region,
                                 crc, ours)
                result["more_rounds"][name] = SHORT_EXTRA
            if ref:
                ref["ratio"] = size / ref["bytes_after"]
                for action in ("compress", "decompress"):
                    ref[action]["mbps"] = mbps(size, ref[action]["seconds"])
            result["reference"][name] = ref
            floors = _write_floors(work, layer, modes, ours, repeat)
            shutil.rmtree(layer)
            memory = _memory(result, name, size, modes, region, log)
            for mode in modes:
                row = make_row(name, mode, size, ours[mode]["compress"],
                               ours[mode]["decompress"], ref)
                add_bounds(row, ref, floors[mode], memory.get(mode), os.cpu_count() or 1)
                result["results"].append(row)
                log(row_line(row), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg_after"] = os.getloadavg()
    result["region_vs_page"] = compare_layouts(result)
    return result


MEMORY_BYTES = 64 << 20   # in-memory codec figures: this much of each pattern
SHORT_MS, SHORT_EXTRA = 50.0, 4   # with --repeat: a time this short gets more rounds


def _convert_all(layer: Path, name: str, modes: list[str], region: int, crc: int,
                 ours: dict[str, Record]) -> None:
    """One round: compress then decompress in each layout, checked, the best kept. The
    callers alternate the layouts' order from round to round: whatever the machine does
    after a conversion (writeback, freed memory) falls on each layout alike."""
    for mode in modes:
        c = convert("compress", layer, mode, region)
        d = convert("decompress", layer, mode, region)
        if file_crc(layer / PAGES) != crc:
            raise BenchError(f"{name} {mode}: decompressed pages differ from the original")
        ours[mode] = _best(ours.get(mode), {"compress": c, "decompress": d})


def _write_floors(work: Path, layer: Path, modes: list[str], ours: dict[str, Record],
                  repeat: int) -> dict[str, Record]:
    """Per mode and action: the write floor of its output (compress_bounds), best of
    `repeat`. The decompressed pages file is the last one our decompress wrote."""
    def best(nbytes: int) -> float:
        return min(write_floor(work, nbytes) for _ in range(repeat))

    decompressed = best(stored_bytes(layer / PAGES))   # the same bytes for every layout
    return {mode: {"compress": best(ours[mode]["compress"]["after"]),
                   "decompress": decompressed} for mode in modes}


def _memory(result: Record, name: str, size: int, modes: list[str], region: int,
            log: Log) -> dict[str, Record]:
    """The codec in memory against python-lz4 on one core, per block layout; the rows by
    mode."""
    from . import codecmem

    data = b"".join(bytes(p) for p in pattern_pieces(name, min(size, MEMORY_BYTES)))
    rows: dict[str, Record] = {}
    for mode in modes:
        row = rows[mode] = {"pattern": name, "mode": mode,
                            **codecmem.measure(data, PAGE if mode == "page" else region)}
        result["memory"].append(row)
        log(f"  {name} {mode} in memory: compress x{row['compress']['ratio']:.2f}, "
            f"decompress x{row['decompress']['ratio']:.2f} the one-core python-lz4 ceiling",
            file=sys.stderr)
    return rows


def _best(old: Record | None, new: Record) -> Record:
    """Per action, the faster of two measurements."""
    if old is None:
        return new
    out = dict(new)
    for action in ("compress", "decompress"):
        if old[action]["seconds"] < new[action]["seconds"]:
            out[action] = old[action]
    return out


def _python_lz4_version() -> dict[str, str] | None:
    try:
        import lz4
        return {"python-lz4": lz4.__version__, "liblz4": lz4.library_version_string()}
    except (ImportError, AttributeError):
        return None


def run(args: argparse.Namespace) -> int:
    size = parse_bytes(args.size)
    patterns = _list(args.patterns, PATTERNS, "patterns")
    modes = _list(args.modes, MODES, "modes")
    from ..codec import parse_size
    from ..errors import ImageError
    try:
        region = parse_size(args.region_size)
    except ImageError as exc:
        raise BenchError(f"--region-size: {exc}") from None
    chart.require(args.chart)
    if args.repeat < 1:
        raise BenchError("--repeat must be at least 1")
    if args.short_below < 0:
        raise BenchError("--short-below must not be negative")
    result = measure(size, patterns, modes, region, args.tmpdir, args.lz4, args.repeat,
                     log=print, short_ms=args.short_below)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.chart:
        figures.compress(args.chart, result)
    return 0
