"""C workloads: start / step / stop, verdict and manifest (building is in build.py).

The protocol is in docs/DESIGN.md ("Workload protocol", "Manifest", "Workload API"); the C side
is zdtmpy/workloads/lib/zdtmtst.c.  Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .build import build_workload, default_static_dir
from .criu import signal_name
from .errors import WorkloadError, WorkloadSkip
from .isolation import alive, children, ns_pid, popen_wait, terminate, tree, wait_status

PIDFILE = "workload.pid"
OUTFILE = "workload.out"
MANIFEST = "manifest"

OUTPUT_CAP = 1 << 20  # bytes of the outfile read for a verdict or a report
_POLL = 0.005  # seconds between checks while waiting for a pidfile, manifest or exit


# ---------------------------------------------------------------------------------------------
# manifest and verdict


@dataclass(frozen=True)
class Region:
    """Pages [start, start + pages*4096) of ns pid `pid` hold pagegen(gen, seed, index + i)."""

    pid: int
    start: int
    pages: int
    gen: str
    seed: int
    index: int
    label: str

    @property
    def end(self) -> int:
        return self.start + self.pages * 4096


@dataclass(frozen=True)
class Manifest:
    step: int
    regions: tuple[Region, ...]

    def pids(self) -> tuple[int, ...]:
        return tuple(sorted({r.pid for r in self.regions}))

    def for_pid(self, pid: int) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if r.pid == pid)


@dataclass(frozen=True)
class Verdict:
    status: str  # "PASS", "FAIL" or "SKIP"
    detail: str  # text after "FAIL: " / "SKIP: ", "" for PASS
    output: str  # the whole outfile


_REGION_KEYS = ("pid", "start", "pages", "gen", "seed", "index", "label")
_VERDICT_RE = re.compile(r"^(PASS|FAIL|SKIP)(?::\s?(.*))?$")


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Parse manifest text; WorkloadError names the source and line on anything unexpected."""
    from zdtmpy import pagegen

    lines = text.splitlines()
    if not lines or lines[0].strip() != "zdtm-manifest 1":
        raise WorkloadError(f"{source}: line 1: expected 'zdtm-manifest 1', got "
                            f"{lines[0] if lines else 'an empty file'!r}")
    step: int | None = None
    regions: list[Region] = []
    for no, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "step" and len(words) == 2:
                step = int(words[1])
                continue
            if words[0] != "region":
                raise ValueError(f"unknown record {words[0]!r}")
            kv = dict(w.split("=", 1) for w in words[1:])
            if sorted(kv) != sorted(_REGION_KEYS):
                raise ValueError(f"expected keys {', '.join(_REGION_KEYS)}")
            if kv["gen"] not in pagegen.GENS:
                raise ValueError(f"unknown gen {kv['gen']!r}")
            r = Region(pid=int(kv["pid"]), start=int(kv["start"], 16),
                       pages=int(kv["pages"]), gen=kv["gen"], seed=int(kv["seed"]),
                       index=int(kv["index"]), label=kv["label"])
            if r.pages <= 0 or r.start % 4096:
                raise ValueError("region must be page aligned and non-empty")
            regions.append(r)
        except ValueError as e:
            raise WorkloadError(f"{source}: line {no}: {e}: {line!r}") from None
    if step is None:
        raise WorkloadError(f"{source}: no 'step N' line")
    return Manifest(step=step, regions=tuple(regions))


def parse_verdict(output: str) -> Verdict | None:
    """The last PASS / FAIL: / SKIP: line of an outfile, or None."""
    for line in reversed(output.splitlines()):
        m = _VERDICT_RE.match(line.strip())
        if m:
            return Verdict(status=m.group(1), detail=(m.group(2) or "").strip(), output=output)
    return None



def _exit_text(status: int | None) -> str:
    if status is None:
        return "exit status unknown (not our child)"
    if os.WIFSIGNALED(status):
        return f"killed by {signal_name(os.WTERMSIG(status))}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Workload:
    """One run of a workload executable in `workdir` (pidfile, outfile, manifest live there).

    Files the workload maps are created next to the outfile, so workdir must survive until the
    workload is stopped (criu restores the mappings from those paths).
    """

    def __init__(self, exe: str | os.PathLike[str], workdir: str | os.PathLike[str],
                 args: Sequence[str] = (), start_timeout: float = 30, no_ns: bool = False,
                 name: str | None = None, env: dict[str, str] | None = None) -> None:
        self.exe = Path(exe).resolve()
        self.workdir = Path(workdir).resolve()
        self.args = tuple(str(a) for a in args)
        self.start_timeout = start_timeout
        self.no_ns = no_ns
        self.env = env  # e.g. marker.env(tag): the tree and its restored copies carry it
        self.name = name or self.exe.name
        self.pidfile = self.workdir / PIDFILE
        self.outfile = self.workdir / OUTFILE
        self.manifest_path = self.workdir / MANIFEST
        self.pid: int | None = None  # host pid of the (current) ns init
        self._proc: subprocess.Popen[bytes] | None = None
        self._pids: set[int] = set()  # every init pid we were told about, for kill()

    def __repr__(self) -> str:
        return f"Workload({self.name}, pid={self.pid}, workdir={self.workdir})"

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- helpers ---------------------------------------------------------------------------

    def output(self, limit: int = OUTPUT_CAP) -> str:
        """The outfile's last `limit` bytes (a runaway workload must not cost our memory)."""
        try:
            with open(self.outfile, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - limit))
                data = f.read(limit)
        except FileNotFoundError:
            return ""
        text = data.decode(errors="replace")
        return text if size <= limit else f"... ({size - limit} bytes cut)\n{text}"

    def _error(self, stage: str, what: str, status: int | None = None) -> WorkloadError:
        text = self.output().rstrip()
        st = f" ({_exit_text(status)})" if status is not None else ""
        return WorkloadError(
            f"workload {self.name}: stage '{stage}': {what}{st}; outfile {self.outfile}:\n"
            + (text if text else "(empty)")
        )

    def _wait_exit(self, pid: int, timeout: float) -> int | None:
        """Wait for `pid` to exit (TimeoutError after timeout): with --no-ns the launcher's
        Popen owns the init and reaps it."""
        if self._proc is not None and pid == self._proc.pid:
            try:
                popen_wait(self._proc, timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError from None
            return self._launcher_status()
        return wait_status(pid, timeout)

    def _launcher_status(self) -> int | None:
        """Launcher wait status if it has exited (reaped), else None."""
        if self._proc is None:
            return None
        rc = self._proc.poll()
        if rc is None:
            return None
        return (-rc) & 0x7F if rc < 0 else (rc & 0xFF) << 8

    def death(self) -> str | None:
        """How the tree's init ended, as its launcher mirrored it; None while it runs."""
        status = self._launcher_status()
        if status is None:
            return None
        code = os.waitstatus_to_exitcode(status)
        if code > 128:  # the launcher exits 128 + the signal that killed the init
            return f"was killed by {signal_name(code - 128)}"
        return _exit_text(status)

    # -- protocol --------------------------------------------------------------------------

    def start(self) -> int:
        """Launch, wait for the pidfile; returns the host pid of the ns init."""
        if self._proc is not None:
            raise WorkloadError(f"workload {self.name}: stage 'start': already started")
        if not self.exe.is_file():
            raise WorkloadError(f"workload {self.name}: stage 'start': no executable {self.exe}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for p in (self.pidfile, self.manifest_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        cmd = [str(self.exe), f"--pidfile={self.pidfile}", f"--outfile={self.outfile}",
               f"--manifest={self.manifest_path}"]
        if self.no_ns:
            cmd.append("--no-ns")
        cmd += self.args
        out = os.open(self.outfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          close_fds=True, cwd=self.workdir, env=self.env)
        except OSError as e:
            raise WorkloadError(f"workload {self.name}: stage 'start': cannot run "
                                f"{self.exe}: {e}") from None
        finally:
            os.close(out)

        deadline = time.monotonic() + self.start_timeout
        while True:
            pid = self._read_pidfile()
            if pid is not None:
                self.pid = pid
                self._pids.add(pid)
                return pid
            status = self._launcher_status()
            if status is not None:
                pid = self._read_pidfile()  # ready just before it died: still a failure
                verdict = parse_verdict(self.output())
                if verdict is not None and verdict.status == "SKIP":
                    raise WorkloadSkip(f"workload {self.name}: SKIP: {verdict.detail}")
                raise self._error("start", "exited before becoming ready", status)
            if time.monotonic() >= deadline:
                self.kill()
                raise self._error("start", f"not ready within {self.start_timeout:g} s "
                                           "(killed)")
            time.sleep(_POLL)

    def _read_pidfile(self) -> int | None:
        try:
            text = self.pidfile.read_text()
        except FileNotFoundError:
            return None
        try:
            return int(text.strip())
        except ValueError:
            raise self._error("start", f"bad pidfile {self.pidfile}: {text!r}") from None

    def manifest(self) -> Manifest:
        try:
            text = self.manifest_path.read_text()
        except FileNotFoundError:
            raise WorkloadError(f"workload {self.name}: no manifest {self.manifest_path}") \
                from None
        return parse_manifest(text, str(self.manifest_path))

    def next_step(self, pid: int, timeout: float = 30) -> Manifest:
        """SIGUSR1 to the init `pid`; wait for the manifest of the next step and return it."""
        self._pids.add(pid)
        want = self.manifest().step + 1
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            raise self._error("step", f"pid {pid} is not running") from None
        deadline = time.monotonic() + timeout
        while True:
            m = self.manifest()
            if m.step >= want:
                return m
            if not alive(pid):
                raise self._error("step", f"pid {pid} exited before step {want}")
            if time.monotonic() >= deadline:
                raise self._error("step", f"manifest step {want} not written within "
                                          f"{timeout:g} s (still step {m.step})")
            time.sleep(_POLL)

    def wait_launcher(self, timeout: float = 30) -> int:
        """Reap the launcher (after a dump killed the tree); returns its exit code."""
        if self._proc is None:
            raise WorkloadError(f"workload {self.name}: stage 'wait-launcher': not started")
        try:
            return popen_wait(self._proc, timeout)
        except subprocess.TimeoutExpired:
            raise self._error("wait-launcher", f"launcher {self._proc.pid} still running after "
                                               f"{timeout:g} s") from None

    def stop(self, pid: int, timeout: float = 30) -> Verdict:
        """SIGTERM the (possibly restored) init `pid`, wait for it, return the verdict."""
        self._pids.add(pid)
        deadline = time.monotonic() + timeout
        status = terminate(pid, timeout, kill=self._sigkill, wait=self._wait_exit,
                           fail=lambda what: self._error("stop", what))
        # Not restored: the launcher mirrors the init's exit; reap it so nothing is left.
        if self._proc is not None and self._proc.poll() is None and not alive(pid):
            try:
                popen_wait(self._proc, max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if self._proc is not None and status is None and pid == self.pid:
            status = self._launcher_status()
        verdict = parse_verdict(self.output())
        if verdict is None:
            raise self._error("stop", f"pid {pid} exited without a PASS/FAIL/SKIP line", status)
        clean = status is None or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
        if verdict.status == "PASS" and not clean:
            raise self._error("stop", f"pid {pid} printed PASS but did not exit cleanly",
                                  status)
        return verdict

    # -- cleanup ---------------------------------------------------------------------------

    def _ours(self, pid: int) -> bool:
        """pid still runs our executable (guards against a recycled pid)."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return False
        return exe.removesuffix(" (deleted)") == str(self.exe)

    def _sigkill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            wait_status(pid, 5)

    def kill(self) -> None:
        """SIGKILL whatever of this workload is still alive and reap what is ours. Idempotent."""
        pids = set(self._pids)
        if self._proc is not None and self._proc.poll() is None:
            pids.update(children(self._proc.pid))  # the ns init, before a pidfile exists
        for pid in sorted(pids):
            if self._proc is not None and pid == self._proc.pid:
                continue
            if alive(pid) and self._ours(pid):
                # The ns init: killing it takes the whole PID namespace down.
                self._sigkill(pid)
            else:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)  # a restored init we were subreaper for
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen_wait(self._proc, 5)


__all__ = [
    "Manifest", "Region", "Verdict", "Workload", "build_workload",
    "default_static_dir", "ns_pid", "parse_manifest", "parse_verdict", "tree",
]
