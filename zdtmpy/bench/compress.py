"""Time zdtmpy's LZ4 page compression against the lz4 command-line tool, in one run.

For each data pattern a synthetic image layer (one pagemap, plain pages file of --size
bytes) is written to a temporary directory on disk. Then, each measured in a child process
of its own (wall time of the call, peak RSS from wait4):

  reference   `lz4 -1 -T1` (`lz4 -1` where -T is not supported) on the pages file, then
              `lz4 -d` of its output; each output is fsynced and the fsync is timed too
  page        compress_dir(per-page) then decompress_dir, in place (both fsync their output)
  region      the same with region blocks of --region-size (default 256 KiB)

Every decompression is checked against the original pages (CRC-32) outside the timings.
`os.sync()` runs before each measurement so earlier writes are not flushed inside it.
MB/s are 10^6 bytes of uncompressed data per second. Ratios "x lz4" are our speed divided by
the reference's on the same data in the same run. Targets (ratio to the reference):
region compress >= 1.5, per-page compress >= 1.0, decompress >= 2.0, peak RSS < 128 MiB.

Patterns: zero; mixed (runs of 1-64 pages: 50% zero, 25% repeated text, 25% random);
random; text (generated log-like lines); elf (system binaries from /usr/bin and /usr/lib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from . import BenchError, chart, figures

HELP = "LZ4 page compression (per-page, region) vs the lz4 CLI on synthetic images"

PATTERNS = ("zero", "mixed", "random", "text", "elf")
MODES = ("page", "region")
TARGETS = {"compress": {"page": 1.0, "region": 1.5}, "decompress": 2.0, "rss_mib": 128}
PAGE = 4096
ENTRY_PAGES = 8192          # pages per pagemap entry of the synthetic layer (32 MiB)
PIECE = 4 << 20             # generation unit
POOL_BYTES = 32 << 20       # distinct bytes per generated pattern, tiled up to --size
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
                   help="measure everything N times and keep the fastest of each (default 1)")


# -- sizes and output -------------------------------------------------------------------

def parse_bytes(text: str) -> int:
    """The codec's one size grammar, failing as a BenchError."""
    from ..codec import parse_size
    from ..errors import ImageError

    try:
        return parse_size(text)
    except ImageError as exc:
        raise BenchError(str(exc)) from None


def _mbps(nbytes, seconds):
    return nbytes / seconds / 1e6 if seconds else None


def _div(a, b):
    return a / b if a is not None and b else None


def _f(value, spec="8.1f", width=8):
    return format(value, spec) if value is not None else "-".rjust(width)


# -- data --------------------------------------------------------------------------------

def _text_pool(nbytes, rng):
    words = ("alloc", "free", "page", "map", "unmap", "read", "write", "open", "close",
             "sync", "flush", "dirty", "clean", "mm", "vma", "pte", "pid", "tid", "fd",
             "sock", "pipe", "inet", "tcp", "udp", "restore", "dump", "criu", "zdtm", "lazy",
             "error", "warning", "info", "debug", "trace", "ok", "fail", "pass", "retry")
    out, n = [], 0
    t = 1700000000.0
    while n < nbytes:
        t += rng.random()
        line = (f"{t:.6f} host{rng.randrange(8)} svc[{rng.randrange(1, 40000)}]: "
                f"{' '.join(rng.choice(words) for _ in range(rng.randrange(3, 10)))} "
                f"addr=0x{rng.getrandbits(40):x} n={rng.randrange(1000)}\n")
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:nbytes]


def _elf_pool(nbytes):
    """System binaries concatenated (sorted walk of /usr/bin, /usr/lib), up to nbytes."""
    parts, n = [], 0
    for top in ("/usr/bin", "/usr/lib"):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(root, name)
                try:
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    with open(p, "rb") as f:
                        if f.read(4) != b"\x7fELF":
                            continue
                        f.seek(0)
                        data = f.read(nbytes - n)
                except OSError:
                    continue
                parts.append(data)
                n += len(data)
                if n >= nbytes:
                    return b"".join(parts)
    if not parts:
        raise BenchError("no ELF files found under /usr/bin and /usr/lib for the elf pattern")
    return b"".join(parts)


def _tile(pool, total):
    """Pieces of `pool` repeated up to `total` bytes (LZ4 sees 64 KiB back at most, so the
    repetition of a multi-MiB pool is invisible to it)."""
    pos = 0
    mv = memoryview(pool)
    while pos < total:
        off = pos % len(pool)
        n = min(PIECE, total - pos, len(pool) - off)
        yield mv[off:off + n]
        pos += n


def pattern_pieces(name, total, seed=1):
    """The pattern's bytes, `total` long, as an iterable of bytes-like pieces."""
    rng = random.Random(f"{name}-{seed}")
    pool_bytes = min(POOL_BYTES, total)
    if name == "zero":
        zero = bytes(min(PIECE, total))
        return (zero[:min(PIECE, total - off)] for off in range(0, total, PIECE))
    if name == "random":
        return _tile(rng.randbytes(pool_bytes), total)
    if name == "text":
        return _tile(_text_pool(pool_bytes, rng), total)
    if name == "elf":
        pool = _elf_pool(pool_bytes)
        return _tile(pool[:len(pool) - len(pool) % PAGE] or pool, total)
    if name == "mixed":
        return _mixed(total, rng, pool_bytes)
    raise BenchError(f"unknown pattern {name!r} (one of {', '.join(PATTERNS)})")


def _mixed(total, rng, pool_bytes):
    text = _text_pool(pool_bytes, rng)
    rand = rng.randbytes(pool_bytes)
    zero = bytes(64 * PAGE)
    pos = 0
    while pos < total:
        n = min(rng.randrange(1, 65) * PAGE, total - pos)
        r = rng.random()
        if r < 0.5:
            yield zero[:n]
        else:
            pool = text if r < 0.75 else rand
            off = rng.randrange(0, (len(pool) - n) // PAGE + 1) * PAGE
            yield pool[off:off + n]
        pos += n


def make_dataset(path: Path, name: str, total: int) -> int:
    """A plain (img_version 2) layer at path with `total` bytes of pattern `name` in one
    pagemap; returns the CRC-32 of its pages file."""
    from ..compress.synth import make_layer
    from ..images.pagemap import PE_PRESENT

    crc = 0
    pieces = iter(pattern_pieces(name, total))
    leftover = memoryview(b"")

    def take(nbytes):  # nbytes of the stream, as pieces, updating the CRC
        nonlocal crc, leftover
        while nbytes:
            if not leftover:
                leftover = memoryview(next(pieces)).cast("B")
            piece, leftover = leftover[:nbytes], leftover[nbytes:]
            crc = zlib.crc32(piece, crc)
            nbytes -= len(piece)
            yield piece

    entries = []
    vaddr = 0x7f0000000000
    npages = total // PAGE
    for first in range(0, npages, ENTRY_PAGES):
        n = min(ENTRY_PAGES, npages - first)
        entries.append((vaddr, n, PE_PRESENT, take(n * PAGE)))
        vaddr += (n + 1) * PAGE   # a one-page hole between entries
    make_layer(path, {1: entries})
    return crc


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


# -- measuring a child --------------------------------------------------------------------

def _run(argv, env=None):
    """Run argv to completion: (exit code, stdout bytes, stderr bytes, wall s, maxrss KiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=env)
        except OSError as exc:
            raise BenchError(f"cannot run {argv[0]}: {exc.strerror}") from None
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), wall, ru.ru_maxrss


def _child_env():
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the zdtmpy that runs this bench
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                else "")
    return env


def child_main(argv) -> int:
    """In the child: one conversion, timed; prints a JSON line."""
    from ..codec import Compression
    from ..compress import compress_dir, decompress_dir

    action, path, mode, region = argv
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    # the CLI's default: originals kept as .bak (the caller removes them, untimed)
    if action == "compress":
        spec = Compression(mode, region_size=int(region))
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


def convert(action, path, mode, region):
    os.sync()
    argv = [sys.executable, "-c", _CHILD, action, str(path), mode, str(region)]
    rc, out, err, _, maxrss = _run(argv, _child_env())
    if rc != 0:
        raise BenchError(f"{action} {path} ({mode}) failed (exit {rc}): "
                         f"{err.decode(errors='replace').strip()[-2000:]}")
    rec = json.loads(out.decode().strip().splitlines()[-1])
    if not rec["changed"]:
        raise BenchError(f"{action} {path} ({mode}) changed nothing")
    rec["rss_kib"] = rec["hwm_kib"] or maxrss
    for bak in Path(path).glob("*.bak"):
        bak.unlink()
    return rec


def lz4_command(tool):
    """The reference command prefix, or None when the tool is missing."""
    exe = shutil.which(tool)
    if exe is None:
        return None
    # -T (threads) appeared in lz4 1.10; older tools are single-threaded anyway
    rc = _run([exe, "-1", "-T1", "-q", "-c", "/dev/null"])[0]
    return [exe, "-1", "-T1"] if rc == 0 else [exe, "-1"]


def lz4_version(tool):
    exe = shutil.which(tool)
    if exe is None:
        return None
    _, out, err, _, _ = _run([exe, "-V"])
    m = re.search(rb"v(\d+\.\d+\.\d+)", out + err)
    return m.group(1).decode() if m else None


# argv: OUTPUT CMD...: run CMD (wall time, maxrss of CMD via wait4), then fsync OUTPUT
_TIMER = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, ru = os.wait4(pid, 0)
t1 = time.perf_counter()
rc = os.waitstatus_to_exitcode(status)
if rc:
    sys.exit(rc)
fd = os.open(out, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
print(json.dumps({"seconds": t1 - t0, "fsync": time.perf_counter() - t1,
                  "cpu": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss}))
"""


def lz4_reference(cmd, src: Path, work: Path, crc: int):
    comp, back = work / "ref.lz4", work / "ref.out"
    res = {}
    for action, argv, out in (("compress", [*cmd, "-f", "-q", str(src), str(comp)], comp),
                              ("decompress", [cmd[0], "-d", "-f", "-q", str(comp), str(back)],
                               back)):
        os.sync()
        # run through a fresh small interpreter: a child forked from this (large) process
        # would count our resident pages in its own maximum RSS until it execs
        rc, out_text, err, _, _ = _run([sys.executable, "-c", _TIMER, str(out), *argv])
        if rc != 0:
            raise BenchError(f"{' '.join(argv)} failed (exit {rc}): "
                             f"{err.decode(errors='replace').strip()}")
        rec = json.loads(out_text.decode().strip().splitlines()[-1])
        res[action] = {"seconds": rec["seconds"] + rec["fsync"],
                       "seconds_no_fsync": rec["seconds"], "cpu_seconds": rec["cpu"],
                       "rss_kib": rec["maxrss"]}
    res["bytes_after"] = comp.stat().st_size
    if file_crc(back) != crc:
        raise BenchError(f"lz4 round trip of {src} does not give the original bytes")
    comp.unlink()
    back.unlink()
    return res


# -- the run ---------------------------------------------------------------------------------

def _list(text, allowed, what):
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise BenchError(f"--{what}: {', '.join(bad) or 'nothing given'}; "
                         f"choose from {','.join(allowed)}")
    return items


def _tmp_base(explicit):
    if explicit:
        return Path(explicit)
    for d in ("/var/tmp", "/tmp"):
        if os.path.isdir(d) and os.access(d, os.W_OK):
            return Path(d)
    return Path(tempfile.gettempdir())


def measure(size, patterns, modes, region, tmpdir, tool="lz4", repeat=1, log=print):
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
    result = {
        "size": size, "region_size": region, "cpus": os.cpu_count(),
        "python": platform.python_version(), "machine": platform.machine(),
        "python_lz4": _python_lz4_version(),
        "lz4_cli": {"command": cmd, "version": lz4_version(tool) if cmd else None},
        "targets": TARGETS, "repeat": repeat, "loadavg_before": os.getloadavg(),
        "reference": {}, "results": [],
    }
    work = Path(tempfile.mkdtemp(prefix="zdtmpy-bench-compress-", dir=base))
    try:
        for name in patterns:
            layer = work / name
            t0 = time.perf_counter()
            crc = make_dataset(layer, name, size)
            log(f"{name}: {size >> 20} MiB written in {time.perf_counter() - t0:.1f}s",
                file=sys.stderr)
            ref, ours = None, {}
            for _ in range(repeat):  # keep the fastest of each measurement
                if cmd:
                    ref = _best(ref, lz4_reference(cmd, layer / PAGES, work, crc))
                for mode in modes:
                    c = convert("compress", layer, mode, region)
                    d = convert("decompress", layer, mode, region)
                    if file_crc(layer / PAGES) != crc:
                        raise BenchError(f"{name} {mode}: decompressed pages differ from "
                                         "the original")
                    ours[mode] = _best(ours.get(mode), {"compress": c, "decompress": d})
            if ref:
                ref["ratio"] = size / ref["bytes_after"]
                for action in ("compress", "decompress"):
                    ref[action]["mbps"] = _mbps(size, ref[action]["seconds"])
            result["reference"][name] = ref
            for mode in modes:
                row = _row(name, mode, size, ours[mode]["compress"],
                           ours[mode]["decompress"], ref)
                result["results"].append(row)
                log(_line(row), file=sys.stderr)
            shutil.rmtree(layer)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg_after"] = os.getloadavg()
    return result


def _best(old, new):
    """Per action, the faster of two measurements."""
    if old is None:
        return new
    out = dict(new)
    for action in ("compress", "decompress"):
        if old[action]["seconds"] < new[action]["seconds"]:
            out[action] = old[action]
    return out


def _python_lz4_version():
    try:
        import lz4
        return {"python-lz4": lz4.__version__, "liblz4": lz4.library_version_string()}
    except (ImportError, AttributeError):
        return None


def _row(name, mode, size, c, d, ref):
    row = {
        "pattern": name, "mode": mode, "bytes": size,
        "bytes_after": c["after"], "ratio": size / c["after"] if c["after"] else None,
        "compress": {"seconds": c["seconds"], "cpu_seconds": c["cpu_seconds"],
                     "mbps": _mbps(size, c["seconds"]), "rss_mib": c["rss_kib"] / 1024},
        "decompress": {"seconds": d["seconds"], "cpu_seconds": d["cpu_seconds"],
                       "mbps": _mbps(size, d["seconds"]), "rss_mib": d["rss_kib"] / 1024},
    }
    vs = {}
    for action in ("compress", "decompress"):
        vs[action] = _div(ref[action]["seconds"], row[action]["seconds"]) if ref else None
    row["vs_lz4"] = vs
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


def _line(r):
    vs = r["vs_lz4"]
    return (f"  {r['pattern']} {r['mode']}: ratio {_f(r['ratio'], '.2f', 1)}, "
            f"compress {_f(r['compress']['mbps'], '.0f', 1)} MB/s "
            f"(x{_f(vs['compress'], '.2f', 1)} lz4), decompress "
            f"{_f(r['decompress']['mbps'], '.0f', 1)} MB/s (x{_f(vs['decompress'], '.2f', 1)})")


def _mark(ok):
    return "n/a" if ok is None else ("ok" if ok else "MISS")


def table(result) -> str:
    lines = []
    cmd = result["lz4_cli"]["command"]
    ref_cmd = " ".join([Path(cmd[0]).name, *cmd[1:]]) if cmd else "none"
    lines.append(f"data: {result['size'] >> 20} MiB per pattern, region "
                 f"{result['region_size'] >> 10} KiB, {result['cpus']} CPUs; reference: "
                 f"{ref_cmd}"
                 f" (lz4 {result['lz4_cli']['version'] or '?'}), times include fsync")
    load = result.get("loadavg_before"), result.get("loadavg_after")
    if all(load):
        lines.append(f"load average before/after: {load[0][0]:.2f} / {load[1][0]:.2f} "
                     f"(other work on this machine skews wall times; CPU seconds are in the "
                     f"JSON); best of {result.get('repeat', 1)}")
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
           f"{'decomp MB/s':>12} {'x lz4':>6} {'RSS c/d MiB':>12}  targets (comp, decomp, rss)")
    lines.append(hdr)
    met = total = 0
    for r in result["results"]:
        t = r["targets"]
        marks = [_mark(t["compress"]), _mark(t["decompress"]), _mark(t["rss"])]
        met += sum(1 for v in t.values() if v)
        total += sum(1 for v in t.values() if v is not None)
        rss = f"{r['compress']['rss_mib']:.0f}/{r['decompress']['rss_mib']:.0f}"
        ratio = "inf" if r["bytes_after"] == 0 else _f(r["ratio"], "7.2f", 7)
        lines.append(f"{r['pattern']:<8} {r['mode']:<7} {ratio:>7} "
                     f"{_f(r['compress']['mbps'], '10.0f', 10)} "
                     f"{_f(r['vs_lz4']['compress'], '6.2f', 6)} "
                     f"{_f(r['decompress']['mbps'], '12.0f', 12)} "
                     f"{_f(r['vs_lz4']['decompress'], '6.2f', 6)} {rss:>12}  "
                     f"{', '.join(marks)}")
    t = TARGETS
    lines.append("")
    lines.append(f"targets (x lz4): compress page >= {t['compress']['page']}, region >= "
                 f"{t['compress']['region']}; decompress >= {t['decompress']}; peak RSS < "
                 f"{t['rss_mib']} MiB. Met: {met} of {total}")
    return "\n".join(lines)


def run(args) -> int:
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
    result = measure(size, patterns, modes, region, args.tmpdir, args.lz4, args.repeat,
                     log=print)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.chart:
        figures.compress(args.chart, result)
    return 0
