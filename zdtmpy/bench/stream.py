"""Dump and restore a >= 1 GiB mixed-memory process through zdtmpy's image streamer
(compressing) and to a plain directory, in the same run: wall times, ratios and bytes.

Plain:  criu dump -D DIR  /  criu restore -D DIR -d
Stream: zdtmpy stream capture (child, started and ready first) + criu dump --stream; the
        time runs from starting criu until the capture has written and closed the whole
        stream file and exited (no fsync on either side: criu does not fsync a plain
        image directory, nor capture its stream without --fsync).
        zdtmpy stream serve (child) + criu restore --stream -d; the time runs from starting
        criu until the server has exited. Both restores start after a sync (the dump's
        dirty pages are not written back meanwhile). Streamer start-up (Python, imports;
        for serve also the checksum pass over the whole stream) is reported on its own
        lines.
Targets (issue 13): stream dump <= 0.6x the plain dump, restore <= 1.5x the plain restore;
CPU seconds and the load average are printed beside them.

The workload is a small standalone C program (compiled with cc in a temporary directory):
SIZE MiB of anonymous memory, page i holding text (i%4==0), random (1), zero-written (2)
or half random/half zero (3) content, then it sleeps. It runs setsid, all fds closed.
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

from ..codec.options import add_options, spec_from_args, to_argv
from . import BenchError, Record, chart, figures

HELP = "stream dump/restore of a 1 GiB mixed workload against a plain directory"

WORKLOAD_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	size_t mib = strtoul(argv[1], NULL, 10), pages = mib * 256, i, j;
	unsigned char *m = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	if (m == MAP_FAILED)
		return 1;
	for (i = 0; i < pages; i++) {
		unsigned char *p = m + i * 4096;
		int kind = i % 4;
		if (kind == 0) {
			for (j = 0; j < 4096; j += 64)
				snprintf((char *)p + j, 64, "page %zu line %zu: some text for lz4 ....", i, j);
			continue;
		}
		if (kind == 2) {
			memset(p, 0, 4096);
			continue;
		}
		for (j = 0; j < (kind == 1 ? 4096u : 2048u); j += 8) {
			x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
			uint64_t v = x * 0x2545f4914f6cdd1dull;
			memcpy(p + j, &v, 8);
		}
		if (kind == 3)
			memset(p + 2048, 0, 2048);
	}
	FILE *f = fopen(argv[2], "w");
	fprintf(f, "%d\n", getpid());
	fclose(f);
	for (;;)
		pause();
}
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=1024, metavar="MIB",
                   help="workload memory in MiB (default 1024)")
    p.add_argument("--repeat", type=int, default=2, metavar="N", help="rounds (default 2)")
    add_options(p, default="page", what="the stream's pages")
    p.add_argument("--criu-bin", metavar="PATH", help="criu binary (default: as zdtmpy finds)")
    p.add_argument("--dir", metavar="DIR", help="where images go (default: a temp dir)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    p.add_argument("--timeout", type=float, default=300.0, help="per step (default 300 s)")
    chart.add_argument(p)


class Bench:
    proc: subprocess.Popen[bytes]   # the workload of the current round, set by start()

    def __init__(self, args: argparse.Namespace, criu: str | Path, root: Path) -> None:
        self.args = args
        self.criu = str(criu)
        self.root = root
        self.exe: Path | None = None
        self.live: list[int] = []  # pids to kill at the end
        self.up_cpu = 0.0   # CPU seconds the last streamer took to get ready

    def build(self) -> None:
        src = self.root / "bigmix.c"
        src.write_text(WORKLOAD_C)
        self.exe = self.root / "bigmix"
        r = subprocess.run(["cc", "-O2", "-o", str(self.exe), str(src)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode:
            raise BenchError(f"cc {src} failed:\n{r.stderr}")

    def start(self) -> int:
        os.sync()  # earlier rounds' dirty pages must not be written back during this one
        ready = self.root / "ready"
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen([str(self.exe), str(self.args.size), str(ready)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=True,
                                start_new_session=True)
        self.live.append(proc.pid)
        deadline = time.monotonic() + self.args.timeout
        while not (ready.exists() and ready.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"workload {self.exe} did not get ready (exit {proc.poll()})")
            time.sleep(0.05)
        self.proc = proc
        return proc.pid

    def criu_run(self, *args: str | int | Path, log: Path) -> None:
        for pidfile in (self.root / "p.pid", self.root / "s.pid"):
            pidfile.unlink(missing_ok=True)
        cmd = [self.criu, *map(str, args), "-o", str(log), "-v2"]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=self.args.timeout)
        if r.returncode:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise BenchError(f"{' '.join(cmd)} failed ({r.returncode}):\n{tail}")

    def after_dump(self, pid: int) -> None:
        self.proc.wait(self.args.timeout)
        self.live.remove(pid)

    def restored(self, pidfile: Path) -> None:
        pid = int(pidfile.read_text())
        self.live.append(pid)
        self.kill(pid)

    def kill(self, pid: int) -> None:
        from ..isolation import kill_and_reap

        kill_and_reap(pid, self.args.timeout)
        if pid in self.live:
            self.live.remove(pid)

    def streamer(self, action: str, *args: str | Path, log: Path,
                 sock: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "zdtmpy.cli", "stream", action, *map(str, args),
               "--accept-timeout", str(self.args.timeout),
               "--idle-timeout", str(self.args.timeout)]
        with open(log, "ab") as f:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                    close_fds=True, start_new_session=True)
        deadline = time.monotonic() + self.args.timeout
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise BenchError(f"zdtmpy stream {action} did not start; see {log}")
            time.sleep(0.005)
        self.up_cpu = process_cpu(proc.pid)
        return proc

    def finish(self, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
        try:
            rc = proc.wait(self.args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"zdtmpy stream {what} hung; see {log}") from None
        if rc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
            raise BenchError(f"zdtmpy stream {what} failed ({rc}):\n{tail}")

    def round_plain(self, n: int) -> Record:
        d = self.root / f"plain{n}"
        d.mkdir()
        pid = self.start()
        t0, c0 = time.monotonic(), children_cpu()
        self.criu_run("dump", "-t", pid, "-D", d, log=self.root / f"plain{n}-dump.log")
        dump, dump_cpu = time.monotonic() - t0, children_cpu() - c0
        self.after_dump(pid)
        size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
        os.sync()   # the dump's dirty pages are not written back during the restore
        t0, c0 = time.monotonic(), children_cpu()
        self.criu_run("restore", "-D", d, "-d", "--pidfile", self.root / "p.pid",
                      log=self.root / f"plain{n}-restore.log")
        restore = time.monotonic() - t0
        self.restored(self.root / "p.pid")  # reaped: its CPU (reading the pages) counts
        restore_cpu = children_cpu() - c0
        shutil.rmtree(d)
        return {"dump": dump, "restore": restore, "bytes": size, "dump_cpu": dump_cpu,
                "restore_cpu": restore_cpu}

    def round_stream(self, n: int) -> Record:
        from ..transport.streamproto import CAPTURE_SOCKET, SERVE_SOCKET

        d, rd = self.root / f"simg{n}", self.root / f"srst{n}"
        d.mkdir()
        rd.mkdir()
        stream = self.root / f"s{n}.zstream"
        comp = to_argv(self.args.compression)
        pid = self.start()
        log = self.root / f"stream{n}-capture.log"
        t0, c0 = time.monotonic(), children_cpu()
        cap = self.streamer("capture", "--images-dir", d, "--stream-file", stream, *comp,
                            log=log, sock=d / CAPTURE_SOCKET)
        ready, ready_cpu = time.monotonic() - t0, self.up_cpu
        t0 = time.monotonic()  # a streamer is a server: started ahead, like a plain dir
        self.criu_run("dump", "--stream", "-t", pid, "-D", d,
                      log=self.root / f"stream{n}-dump.log")
        criu_done = time.monotonic() - t0
        self.finish(cap, "capture", log)
        dump, dump_cpu = time.monotonic() - t0, children_cpu() - c0
        self.after_dump(pid)
        os.sync()   # as for the plain restore
        log = self.root / f"stream{n}-serve.log"
        t0, c0 = time.monotonic(), children_cpu()
        srv = self.streamer("serve", "--images-dir", rd, "--stream-file", stream,
                            log=log, sock=rd / SERVE_SOCKET)
        serve_ready, serve_ready_cpu = time.monotonic() - t0, self.up_cpu
        t0 = time.monotonic()
        self.criu_run("restore", "--stream", "-D", rd, "-d", "--pidfile", self.root / "s.pid",
                      log=self.root / f"stream{n}-restore.log")
        restore_criu = time.monotonic() - t0
        self.finish(srv, "serve", log)
        restore = time.monotonic() - t0
        self.restored(self.root / "s.pid")
        restore_cpu = children_cpu() - c0
        size = stream.stat().st_size
        shutil.rmtree(d)
        shutil.rmtree(rd)
        stream.unlink()
        return {"dump": dump, "dump_criu": criu_done, "capture_ready": ready,
                "restore": restore, "restore_criu": restore_criu, "serve_ready": serve_ready,
                "bytes": size, "capture_ready_cpu": ready_cpu,
                "serve_ready_cpu": serve_ready_cpu,
                "dump_cpu": dump_cpu, "restore_cpu": restore_cpu}

    def cleanup(self) -> None:
        for pid in list(self.live):
            with_kill(pid)


def children_cpu() -> float:
    """CPU seconds of every child waited for so far (criu, the streamers)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds a running process has used so far (0.0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def feed_path() -> str:
    """How serve hands pages to criu on this machine (pipegift), for the report."""
    from ..transport import pipegift

    if pipegift.usable():
        return "serve feeds criu by vmsplice from fresh huge-page memory"
    return ("serve feeds criu by writev (vmsplice or transparent huge pages missing, or "
            "ZDTMPY_SERVE_WRITEV=1)")


def with_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def median(rows: list[Record], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


# issue 13: against a plain-directory dump / restore of the same workload, same run
DUMP_TARGET, RESTORE_TARGET = 0.6, 1.5


def report(plain: list[Record], stream: list[Record], args: argparse.Namespace,
           loads: tuple[float, float] | None = None) -> str:
    pd, sd = median(plain, "dump"), median(stream, "dump")
    pr, sr = median(plain, "restore"), median(stream, "restore")
    pb, sb = median(plain, "bytes"), median(stream, "bytes")
    pdc, sdc = median(plain, "dump_cpu"), median(stream, "dump_cpu")
    prc, src = median(plain, "restore_cpu"), median(stream, "restore_cpu")
    up = median(stream, "serve_ready")
    window = median([{"w": r["restore_cpu"] - r["serve_ready_cpu"]} for r in stream], "w")
    dwin = median([{"w": r["dump_cpu"] - r["capture_ready_cpu"]} for r in stream], "w")
    mib = 1 << 20
    ratio = sd / pd
    verdict = "met" if ratio <= DUMP_TARGET else "NOT met"
    rratio = sr / pr
    rverdict = "met" if rratio <= RESTORE_TARGET else "NOT met"
    load = (f"load average {loads[0]:.1f} before, {loads[1]:.1f} after (2 cores shared: "
            "wall ratios move with it, CPU seconds much less)" if loads else "")
    return "\n".join([load,
        f"workload: {args.size} MiB mixed (text/random/zero/half), {args.repeat} round(s), "
        f"medians; stream compression {args.compression.name}; {feed_path()}",
        f"{'':14}{'plain dir':>12}{'stream':>12}{'ratio':>8}",
        f"{'dump (s)':14}{pd:12.2f}{sd:12.2f}{ratio:8.2f}   target <= {DUMP_TARGET}: {verdict}",
        f"{'  CPU (s)':14}{pdc:12.2f}{sdc:12.2f}{sdc / max(pdc, 1e-6):8.2f}"
        "   (criu; stream: + capture, its start-up included)",
        f"{'  in dump':14}{pdc:12.2f}{dwin:12.2f}{dwin / max(pdc, 1e-6):8.2f}"
        "   (the same without capture's CPU before criu started)",
        f"{'  criu exits':14}{'':12}{median(stream, 'dump_criu'):12.2f}",
        f"{'  capture up':14}{'':12}{median(stream, 'capture_ready'):12.2f}"
        f"   (streamer start-up, before criu; CPU {median(stream, 'capture_ready_cpu'):.2f})",
        f"{'restore (s)':14}{pr:12.2f}{sr:12.2f}{rratio:8.2f}   target <= {RESTORE_TARGET}: "
        f"{rverdict}",
        f"{'  CPU (s)':14}{prc:12.2f}{src:12.2f}{src / max(prc, 1e-6):8.2f}"
        "   (criu, the restored task; stream: + serve, its start-up and check)",
        f"{'  in restore':14}{prc:12.2f}{window:12.2f}{window / max(prc, 1e-6):8.2f}"
        "   (the same without serve's CPU before criu started)",
        f"{'  criu exits':14}{'':12}{median(stream, 'restore_criu'):12.2f}"
        "   (then serve exits: the restore time ends there)",
        f"{'  serve up':14}{'':12}{up:12.2f}"
        f"   (start-up + checking the stream, before criu; CPU "
        f"{median(stream, 'serve_ready_cpu'):.2f})",
        f"{'  with it':14}{pr:12.2f}{up + sr:12.2f}{(up + sr) / pr:8.2f}"
        "   (restore counted from starting serve)",
        f"{'bytes (MiB)':14}{pb / mib:12.1f}{sb / mib:12.1f}{sb / pb:8.2f}",
    ])


def run(args: argparse.Namespace) -> int:
    from ..criu import find_criu
    from ..isolation import become_subreaper

    chart.require(args.chart)
    args.compression = spec_from_args(args)   # the one grammar of every command's options
    load_before = os.getloadavg()
    criu = find_criu(args.criu_bin)
    become_subreaper()  # restored trees are reparented to us: we reap them at once
    base = Path(args.dir) if args.dir else None
    root = Path(tempfile.mkdtemp(prefix="zdtmpy-bench-stream-", dir=base))
    bench = Bench(args, criu.path, root)
    try:
        bench.build()
        plain, stream = [], []
        for n in range(args.repeat):
            plain.append(bench.round_plain(n))
            stream.append(bench.round_stream(n))
            print(f"round {n}: plain {plain[-1]['dump']:.2f}s/{plain[-1]['restore']:.2f}s, "
                  f"stream {stream[-1]['dump']:.2f}s/{stream[-1]['restore']:.2f}s",
                  file=sys.stderr)
        print(f"criu {criu.version_str} ({criu.path})")
        print(report(plain, stream, args, (load_before[0], os.getloadavg()[0])))
        if args.json:
            Path(args.json).write_text(json.dumps({"criu": criu.version_str, "plain": plain,
                                                   "stream": stream, "size_mib": args.size,
                                                   "compress": args.compression.name},
                                                  indent=1))
        if args.chart:
            figures.stream(args.chart, args, criu, plain, stream, load_before)
    finally:
        bench.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":  # python -m zdtmpy.bench.stream == zdtmpy bench stream
    from ..cli import main

    sys.exit(main(["bench", "stream", *sys.argv[1:]]))
