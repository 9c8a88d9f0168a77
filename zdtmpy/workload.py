"""C workloads: build (hash-keyed cache), start / step / stop, verdict and manifest.

The protocol is in docs/DESIGN.md ("Workload protocol", "Manifest", "Workload API"); the C side
is tests/static/lib/zdtmtst.c.  Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zdtmpy.errors import BuildError, WorkloadError, WorkloadSkip

# -Werror: a warning in a workload is a bug in the test, not something to scroll past.
CFLAGS: tuple[str, ...] = ("-O2", "-Wall", "-Werror")
LDFLAGS: tuple[str, ...] = ()

PIDFILE = "workload.pid"
OUTFILE = "workload.out"
MANIFEST = "manifest"

_POLL = 0.005  # seconds between checks while waiting for a pidfile, manifest or exit


# ---------------------------------------------------------------------------------------------
# paths and building


def default_static_dir() -> Path:
    """tests/static of the source tree this package lives in."""
    return Path(__file__).resolve().parent.parent / "tests" / "static"


def cache_root() -> Path:
    """${ZDTMPY_CACHE:-~/.cache/zdtmpy}: shared by all pytest-xdist workers and runs."""
    env = os.environ.get("ZDTMPY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "zdtmpy"


def compiler_command() -> list[str]:
    """The C compiler: $CC, else the one Python was built with, else gcc."""
    import sysconfig

    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "gcc"
    return shlex.split(cc)


class _Captured:
    """A distutils compiler whose commands run with their output captured (not on our stderr)."""

    def __init__(self, what: str):
        self.what = what
        self.log: list[str] = []

    def spawn(self, cmd, **kwargs):  # signature of CCompiler.spawn
        from distutils.errors import DistutilsExecError

        try:
            res = subprocess.run(
                list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", check=False,
            )
        except OSError as e:
            raise DistutilsExecError(f"cannot run {cmd[0]}: {e}") from None
        self.log.append("$ " + shlex.join(cmd) + ("\n" + res.stdout if res.stdout else ""))
        if res.returncode:
            raise DistutilsExecError(f"{cmd[0]} exited with status {res.returncode}")

    def output(self) -> str:
        return "\n".join(self.log).rstrip()


def new_compiler(what: str, exe_flags: Sequence[str] | None = None):
    """(compiler, capture): setuptools' distutils CCompiler with captured output.

    With exe_flags, the compiler is set to `$CC exe_flags` (standalone executables); without,
    it keeps Python's own configuration (extension modules: -fPIC, -shared, Python's flags).
    """
    from distutils.ccompiler import new_compiler as _new
    from distutils.sysconfig import customize_compiler

    import setuptools  # noqa: F401  (provides distutils on Python >= 3.12)

    cc = _new()
    customize_compiler(cc)
    if exe_flags is not None:
        cmd = compiler_command()
        cc.set_executables(
            compiler=cmd + list(exe_flags), compiler_so=cmd + list(exe_flags),
            linker_exe=cmd + list(LDFLAGS),
        )
    cap = _Captured(what)
    cc.spawn = cap.spawn
    return cc, cap


def compile_sources(cc, cap, sources: Iterable[Path], objdir: Path, what: str, **kw) -> list[str]:
    """Compile one source at a time so that a BuildError names the file that failed."""
    from distutils.errors import CompileError

    objects: list[str] = []
    for src in sources:
        try:
            objects += cc.compile([str(src)], output_dir=str(objdir), **kw)
        except CompileError:
            raise BuildError(
                f"{what}: compiling {src} failed:\n{cap.output()}"
            ) from None
    return objects


@contextlib.contextmanager
def build_lock(lockpath: Path):
    """Exclusive fcntl lock: one builder per hash across processes (xdist workers, runs)."""
    lockpath.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lockpath, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_cached(kind: str, digest: str, filename: str, build) -> Path:
    """<cache>/<kind>/<digest>/<filename>, built once by build(tmpdir) -> Path in tmpdir.

    The result appears by renaming a complete temporary directory, so a reader that sees the
    file sees all of it; the lock keeps two processes from building the same thing twice.
    """
    base = cache_root() / kind
    final_dir = base / digest
    target = final_dir / filename
    if target.exists():
        return target
    with build_lock(base / f"{digest}.lock"):
        if target.exists():
            return target
        if final_dir.exists():  # half-removed or foreign leftovers: start over
            shutil.rmtree(final_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=base))
        try:
            built = build(tmp)
            if built != tmp / filename:
                os.replace(built, tmp / filename)
            for junk in tmp.iterdir():  # keep only the product
                if junk.name != filename:
                    shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
            os.rename(tmp, final_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sources(name: str, static_dir: Path) -> list[Path]:
    main = static_dir / f"{name}.c"
    if not main.is_file():
        raise BuildError(f"workload {name}: no source {main}")
    lib = static_dir / "lib"
    return [main] + sorted(lib.glob("*.c"))


def workload_digest(name: str, static_dir: Path) -> str:
    """Hash of everything that goes into the executable: sources, headers, compiler, flags."""
    h = hashlib.sha256()
    h.update(repr((name, compiler_command(), CFLAGS, LDFLAGS)).encode())
    lib = static_dir / "lib"
    files = _sources(name, static_dir) + sorted(lib.glob("*.h")) + sorted(static_dir.glob("*.h"))
    for f in files:
        h.update(f"\0{f.relative_to(static_dir)}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


def build_workload(name: str, static_dir: os.PathLike | None = None) -> Path:
    """Build tests/static/<name>.c + lib/*.c into a cached executable and return its path.

    Cached under ${ZDTMPY_CACHE:-~/.cache/zdtmpy}/workloads/<hash>/<name>; safe when several
    processes build at once.  Raises BuildError naming the source, with the compiler output.
    """
    sdir = Path(static_dir) if static_dir is not None else default_static_dir()
    sdir = sdir.resolve()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise BuildError(f"workload {name!r}: not a valid workload name")
    digest = workload_digest(name, sdir)

    def build(tmp: Path) -> Path:
        from distutils.errors import LinkError

        what = f"workload {name}"
        cc, cap = new_compiler(what, CFLAGS)
        objs = compile_sources(cc, cap, _sources(name, sdir), tmp / "obj", what,
                               include_dirs=[str(sdir)])
        try:
            cc.link_executable(objs, name, output_dir=str(tmp))
        except LinkError:
            raise BuildError(f"{what}: linking {sdir / (name + '.c')} failed:\n"
                             f"{cap.output()}") from None
        return tmp / name

    return build_cached("workloads", digest, name, build)


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


# ---------------------------------------------------------------------------------------------
# processes


def _proc_state(pid: int) -> str | None:
    """Process state letter from /proc/<pid>/stat, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(b")") + 2:][:1].decode()


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")


def _wait_gone(pid: int, timeout: float) -> int | None:
    """Wait until pid has exited: its wait status if it was our child (reaped), else None.

    A restored init is our child when we are a child subreaper; otherwise someone else reaps
    it and we can only watch /proc.  Raises TimeoutError.
    """
    deadline = time.monotonic() + timeout
    ours = True
    while True:
        if ours:
            try:
                wpid, status = os.waitpid(pid, os.WNOHANG)
                if wpid == pid:
                    return status
            except ChildProcessError:
                ours = False
        if not ours and not _alive(pid):
            return None
        if time.monotonic() >= deadline:
            raise TimeoutError
        time.sleep(_POLL)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def ns_pid(host_pid: int) -> int:
    """The innermost pid of a process (last NSpid field), as the manifest names it."""
    with open(f"/proc/{host_pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise WorkloadError(f"/proc/{host_pid}/status: no NSpid line")


def tree_pids(host_pid: int) -> dict[int, int]:
    """{ns pid: host pid} for a process and all its descendants (live ones)."""
    out: dict[int, int] = {}
    todo = [host_pid]
    while todo:
        pid = todo.pop()
        try:
            out[ns_pid(pid)] = pid
        except (OSError, WorkloadError):
            continue
        todo += _children(pid)
    return out


def _exit_text(status: int | None) -> str:
    if status is None:
        return "exit status unknown (not our child)"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Workload:
    """One run of a workload executable in `workdir` (pidfile, outfile, manifest live there).

    Files the workload maps are created next to the outfile, so workdir must survive until the
    workload is stopped (criu restores the mappings from those paths).
    """

    def __init__(self, exe: os.PathLike, workdir: os.PathLike, args: Sequence[str] = (),
                 start_timeout: float = 30, no_ns: bool = False, name: str | None = None):
        self.exe = Path(exe).resolve()
        self.workdir = Path(workdir).resolve()
        self.args = tuple(str(a) for a in args)
        self.start_timeout = start_timeout
        self.no_ns = no_ns
        self.name = name or self.exe.name
        self.pidfile = self.workdir / PIDFILE
        self.outfile = self.workdir / OUTFILE
        self.manifest_path = self.workdir / MANIFEST
        self.pid: int | None = None  # host pid of the (current) ns init
        self._proc: subprocess.Popen | None = None
        self._pids: set[int] = set()  # every init pid we were told about, for kill()

    def __repr__(self):
        return f"Workload({self.name}, pid={self.pid}, workdir={self.workdir})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    # -- helpers ---------------------------------------------------------------------------

    def output(self) -> str:
        try:
            return self.outfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _error(self, stage: str, what: str, status: int | None = None) -> WorkloadError:
        text = self.output().rstrip()
        st = f" ({_exit_text(status)})" if status is not None else ""
        return WorkloadError(
            f"workload {self.name}: stage '{stage}': {what}{st}; outfile {self.outfile}:\n"
            + (text if text else "(empty)")
        )

    def _launcher_status(self) -> int | None:
        """Launcher wait status if it has exited (reaped), else None."""
        if self._proc is None:
            return None
        rc = self._proc.poll()
        if rc is None:
            return None
        return (-rc) & 0x7F if rc < 0 else (rc & 0xFF) << 8

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
                                          close_fds=True, cwd=self.workdir)
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
            if not _alive(pid):
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
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self._error("wait-launcher", f"launcher {self._proc.pid} still running after "
                                               f"{timeout:g} s") from None

    def stop(self, pid: int, timeout: float = 30) -> Verdict:
        """SIGTERM the (possibly restored) init `pid`, wait for it, return the verdict."""
        self._pids.add(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            raise self._error("stop", f"pid {pid} is not running") from None
        deadline = time.monotonic() + timeout
        try:
            if self._proc is not None and pid == self._proc.pid:  # --no-ns: Popen owns it
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    raise TimeoutError from None
                status = self._launcher_status()
            else:
                status = _wait_gone(pid, timeout)
        except TimeoutError:
            self._sigkill(pid)
            raise self._error("stop", f"pid {pid} did not exit within {timeout:g} s after "
                                      "SIGTERM (killed)") from None
        # Not restored: the launcher mirrors the init's exit; reap it so nothing is left.
        if self._proc is not None and self._proc.poll() is None and not _alive(pid):
            try:
                self._proc.wait(max(0.5, deadline - time.monotonic()))
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
            _wait_gone(pid, 5)

    def kill(self) -> None:
        """SIGKILL whatever of this workload is still alive and reap what is ours. Idempotent."""
        pids = set(self._pids)
        if self._proc is not None and self._proc.poll() is None:
            pids.update(_children(self._proc.pid))  # the ns init, before a pidfile exists
        for pid in sorted(pids):
            if self._proc is not None and pid == self._proc.pid:
                continue
            if _alive(pid) and self._ours(pid):
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
                self._proc.wait(5)


__all__ = [
    "CFLAGS", "Manifest", "Region", "Verdict", "Workload", "build_workload", "cache_root",
    "default_static_dir", "ns_pid", "parse_manifest", "parse_verdict", "tree_pids",
]
