"""Time `criu dump --page-server` into zdtmpy's compressing page server against criu's own
`criu page-server` (uncompressed), on one process holding >= 1 GiB of mixed memory.

The process (zdtmpy/bench/bigmix.c, built with cc) sleeps in pause() and is dumped with
--leave-running, so every round dumps the same memory: criu's server, then zdtmpy's in page
mode, then in region mode; rounds alternate the order. Reported per target: median criu dump
wall time and CPU time (criu dump + the server), the server's own CPU time, their ratios to
criu's own server, bytes of pages written, and how long zdtmpy's server took after criu's
dump had ended (fsync and install). Target (issue 13): dump time <= 1.0x criu's page
server; on a shared machine the CPU ratio says more than the wall ratio.

Reading the figures: criu's dump corks its page-server socket (TCP_CORK) and never uncorks
it, so its final CLOSE command waits for the kernel's 200 ms cork ceiling; every dump, with
either server, ends with about 0.2 s of that. Before it, the transfer is bound by the
receiving side: criu spends most of it blocked in splice() on a full socket.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import BenchError, Record, chart, figures

if TYPE_CHECKING:
    from ..codec import Compression
    from ..criu import Criu

HELP = "criu dump through zdtmpy's compressing page server vs criu page-server"
SOURCE = Path(__file__).with_name("bigmix.c")
TARGET_RATIO = 1.0   # issue 13: no slower than criu page-server (it writes 2.6x more)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mib", type=int, default=1024, help="memory of the dumped process (MiB)")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="rounds (default 3)")
    p.add_argument("--region", default="256K", help="region size for the region target")
    p.add_argument("--dir", metavar="DIR", help="where images go (default: a temp dir in "
                   "$TMPDIR; removed after each dump)")
    p.add_argument("--criu-bin", metavar="PATH", help="criu to use (default: as the plugin)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    p.add_argument("--timeout", type=float, default=300.0, help="per-dump timeout (seconds)")
    chart.add_argument(p)


def build(workdir: Path) -> Path:
    exe = workdir / "bigmix"
    try:
        subprocess.run(["cc", "-O2", "-o", str(exe), str(SOURCE)], check=True, timeout=120,
                       capture_output=True, text=True)
    except FileNotFoundError:
        raise BenchError("bench pageserver: no C compiler (cc) to build bigmix.c") from None
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"bench pageserver: building {SOURCE} failed:\n{exc.stderr}") from None
    return exe


def start_bigmix(exe: Path, mib: int, workdir: Path,
                 timeout: float) -> subprocess.Popen[bytes]:
    out = workdir / "bigmix.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([str(exe), str(mib)], stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, close_fds=True,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while "ready" not in out.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BenchError(f"bench pageserver: bigmix {mib} MiB did not become ready: "
                             f"{out.read_text()[-500:]}")
        time.sleep(0.05)
    return proc


def _dump(criu: Criu, pid: int, images: Path, port: int, timeout: float) -> float:
    log = images / "dump.log"
    cmd = [str(criu.path), "dump", "-t", str(pid), "-D", str(images), "--leave-running",
           "--page-server", "--address", "127.0.0.1", "--port", str(port), "-o", str(log)]
    start = time.monotonic()
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"bench pageserver: criu dump did not finish in {timeout:g}s") from None
    took = time.monotonic() - start
    if res.returncode != 0:
        raise BenchError(f"bench pageserver: criu dump failed (exit {res.returncode}); see "
                         f"{log}:\n{log.read_text(errors='replace')[-1500:]}")
    return took


def _pages_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.name.startswith("pages-"))


def dump_criu_server(criu: Criu, pid: int, images: Path, timeout: float) -> Record:
    from ..cycle.background import free_port

    ps_dir = images / "ps"
    ps_dir.mkdir()
    rfd, wfd = os.pipe()
    port = free_port()
    server = subprocess.Popen(
        [str(criu.path), "page-server", "-D", str(ps_dir), "--address", "127.0.0.1",
         "--port", str(port), "--status-fd", str(wfd), "-o", str(images / "ps.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        pass_fds=(wfd,), start_new_session=True)
    os.close(wfd)
    try:
        if not os.read(rfd, 1):
            raise BenchError(f"bench pageserver: criu page-server did not start; see "
                             f"{images / 'ps.log'}")
        took = _dump(criu, pid, images, port, timeout)
        server_cpu = _reap_cpu(server, timeout)
    finally:
        os.close(rfd)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return {"dump_s": took, "pages_bytes": _pages_bytes(ps_dir), "server_cpu_s": server_cpu}


def _reap_cpu(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for `proc` to exit (it serves one session); its own CPU seconds (wait4)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here, not by Popen
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise BenchError(f"bench pageserver: criu page-server did not exit within "
                             f"{timeout:g}s after the dump")
        time.sleep(0.005)


def dump_zdtmpy_server(criu: Criu, pid: int, images: Path, spec: Compression,
                       timeout: float) -> Record:
    from ..transport.pageserver import PageServer, header_size_for

    srv = PageServer(images, spec=spec, header_size=header_size_for(criu.version),
                     sessions=1, timeout=timeout, log_path=images / "zdtmpy-ps.log")
    srv.start()
    cpu0 = _self_cpu()   # this process is idle but for the server while criu dumps
    try:
        took = _dump(criu, pid, images, srv.port, timeout)
        done = time.monotonic()
        result = srv.wait(timeout)
        settle = time.monotonic() - done
        server_cpu = _self_cpu() - cpu0
    finally:
        srv.stop()
    return {"dump_s": took, "server_settle_s": settle, "pages_bytes": _pages_bytes(images),
            "payload_bytes": result.payload_bytes, "server_cpu_s": server_cpu}


RSS_TARGET_MIB = 128   # issue 13: peak RSS stays < 128 MiB


def _cpu() -> float:
    """CPU seconds of this process (every thread) and of its waited-for children."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _self_cpu() -> float:
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> int:
    from ..codec import Compression, parse_size
    from ..criu import find_criu

    chart.require(args.chart)
    load_before = os.getloadavg()
    criu = find_criu(args.criu_bin)
    targets = {
        "criu page-server (off)": None,
        "zdtmpy page": Compression("page"),
        f"zdtmpy region{args.region.lower()}": Compression("region", parse_size(args.region)),
    }
    base = Path(args.dir) if args.dir else None
    work = Path(tempfile.mkdtemp(prefix="zdtmpy-bench-ps-", dir=base))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    proc = None
    try:
        exe = build(work)
        proc = start_bigmix(exe, args.mib, work, args.timeout)
        print(f"criu {criu.version_str}, bigmix {args.mib} MiB (pid {proc.pid}), "
              f"{os.cpu_count()} CPUs, images in {work}", flush=True)
        names = list(targets)
        for rnd in range(args.repeat):
            order = names if rnd % 2 == 0 else names[::-1]
            for name in order:
                images = work / f"img-{rnd}-{names.index(name)}"
                images.mkdir()
                spec = targets[name]
                c0 = _cpu()
                if spec is None:
                    rec = dump_criu_server(criu, proc.pid, images, args.timeout)
                else:
                    rec = dump_zdtmpy_server(criu, proc.pid, images, spec, args.timeout)
                rec["cpu_s"] = _cpu() - c0
                results[name].append(rec)
                print(f"  round {rnd + 1}: {name}: {rec['dump_s']:.3f}s, "
                      f"{rec['pages_bytes']} bytes", flush=True)
                shutil.rmtree(images)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    base_name = names[0]
    base_t = statistics.median(r["dump_s"] for r in results[base_name])
    summary = {}
    base_cpu = statistics.median(r["cpu_s"] for r in results[base_name])
    base_server = statistics.median(r["server_cpu_s"] for r in results[base_name])
    print(f"\n{'target':28} {'dump s (median)':>16} {'ratio':>7} {'CPU s':>7} {'ratio':>7} "
          f"{'server CPU s':>13} {'ratio':>7} {'pages bytes':>14} {'after dump s':>13}")
    for name in names:
        t = statistics.median(r["dump_s"] for r in results[name])
        cpu = statistics.median(r["cpu_s"] for r in results[name])
        server = statistics.median(r["server_cpu_s"] for r in results[name])
        size = results[name][-1]["pages_bytes"]
        cpu_ratio = cpu / max(base_cpu, 1e-6)
        server_ratio = server / max(base_server, 1e-6)
        settle = statistics.median(r.get("server_settle_s", 0.0) for r in results[name])
        summary[name] = {"dump_s": t, "ratio": t / base_t, "pages_bytes": size, "cpu_s": cpu,
                         "cpu_ratio": cpu_ratio, "server_cpu_s": server,
                         "server_cpu_ratio": server_ratio, "settle_s": settle,
                         "runs": results[name]}
        print(f"{name:28} {t:16.3f} {t / base_t:7.2f} {cpu:7.2f} {cpu_ratio:7.2f} "
              f"{server:13.2f} {server_ratio:7.2f} {size:14d} {settle:13.3f}")
    print("(CPU s: criu dump + the page server; server CPU s: the page server alone, criu's "
          "page-server process or this process where zdtmpy's runs, its session start to "
          f"end; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after)")
    rss = _peak_rss_mib()
    print(f"peak RSS of this process (zdtmpy's page server runs in it): {rss:.0f} MiB, target "
          f"< {RSS_TARGET_MIB} MiB: {'met' if rss < RSS_TARGET_MIB else 'NOT met'}")
    worst = max(summary[n]["ratio"] for n in names[1:])
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    worst_cpu = max(summary[n]["cpu_ratio"] for n in names[1:])
    print(f"\nworst zdtmpy/criu dump-time ratio {worst:.2f}: target <= {TARGET_RATIO}x "
          f"{verdict}")
    worst_server = max(summary[n]["server_cpu_ratio"] for n in names[1:])
    print(f"worst zdtmpy/criu CPU-time ratio {worst_cpu:.2f} (<= {TARGET_RATIO}x: "
          f"{'yes' if worst_cpu <= TARGET_RATIO else 'no'}; the machine's two cores are "
          "shared by criu and the server, so on a quiet machine the wall ratio follows it)")
    print(f"worst server CPU ratio (zdtmpy's server / criu page-server) {worst_server:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"criu": criu.version_str, "mib": args.mib,
                                               "targets": summary}, indent=2))
    if args.chart:
        figures.page_server(args.chart, args, criu, names, summary, base_t, load_before)
    return 0


if __name__ == "__main__":  # python -m zdtmpy.bench.pageserver == zdtmpy bench page-server
    from ..cli import main

    sys.exit(main(["bench", "page-server", *sys.argv[1:]]))
