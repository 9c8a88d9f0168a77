"""Find, probe and run criu.

`find_criu()` picks a binary the way ci/provision-criu.sh does (option, $ZDTM_CRIU, PATH,
the build cache) and keeps only one that passes `criu check`. `Criu.run()` runs one action
with a log file, a timeout and error capture.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import spawnns
from .errors import CriuFailure, CriuNotFound, StageTimeout

MIN_VERSION = (4, 0)
CHECK_TIMEOUT = 60

# Every criu log here carries this error; it is harmless (no CAP_SYS_RESOURCE).
_HARMLESS = (re.compile(r"rlimit: Can't setup RLIMIT_NOFILE"),)
_ERROR_LINE = re.compile(r"\bError\b|\bBUG\b|Failed|failed:")
LOG_HEAD_CAP = 4 << 20  # bytes of a log scanned for error lines from its start
LOG_TAIL_CAP = 256 << 10  # and from its end
LINE_CAP = 500  # characters shown of one log line
OUTPUT_CAP = 2000  # characters shown of criu's stdout/stderr


def cache_dir() -> Path:
    from .cachedir import cache_root

    return cache_root()


def _parse_version(text: str) -> tuple[int, ...]:
    m = re.search(r"Version:\s*(\d+(?:\.\d+)*)", text)
    if not m:
        return ()
    return tuple(int(x) for x in m.group(1).split("."))


@dataclass
class Criu:
    """A criu binary that passed `criu check`."""

    path: Path
    version: tuple[int, ...]
    _features: dict[str, bool] = field(default_factory=dict, repr=False)

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    def handoff(self) -> dict[str, object]:
        """This criu as the controller hands it to an xdist worker: the worker neither
        probes it again nor re-asks the features already asked here."""
        return {"path": str(self.path), "version": list(self.version),
                "features": dict(self._features)}

    @classmethod
    def from_handoff(cls, data: dict[str, object]) -> Criu:
        version = data["version"]
        features = data.get("features") or {}
        assert isinstance(version, list) and isinstance(features, dict)
        return cls(Path(str(data["path"])), tuple(int(v) for v in version),
                   {str(k): bool(v) for k, v in features.items()})

    def has_feature(self, name: str) -> bool:
        """`criu check --feature NAME` passes (cached per process)."""
        if name not in self._features:
            try:
                r = subprocess.run(
                    [str(self.path), "check", "--feature", name],
                    stdin=subprocess.DEVNULL, capture_output=True, timeout=CHECK_TIMEOUT,
                )
                self._features[name] = r.returncode == 0
            except subprocess.TimeoutExpired:
                self._features[name] = False
        return self._features[name]

    def ask_features(self, names: Iterable[str]) -> dict[str, bool]:
        """has_feature for several names, the `criu check`s run side by side (an xdist
        controller asks them before each worker may start)."""
        from concurrent.futures import ThreadPoolExecutor

        missing = [n for n in dict.fromkeys(names) if n not in self._features]
        if len(missing) > 1:
            with ThreadPoolExecutor(len(missing)) as ex:
                list(ex.map(self.has_feature, missing))
        return {n: self.has_feature(n) for n in names}

    def run(self, action: str, args: list[str], *, log: Path, stage: str, timeout: float,
            expect_fail: bool = False, env: dict[str, str] | None = None) -> CriuRun:
        """Run `criu ACTION ARGS -o LOG -v4` (with `env`, e.g. a marker.env()).

        Raises CriuFailure (non-zero exit, or any exit when it crashed by a signal),
        StageTimeout (criu killed after `timeout` seconds). With expect_fail, a clean
        non-zero exit is the expected outcome and success raises CriuFailure instead.
        criu runs in its own session, so nothing but us ends it: on a timeout and on any
        interruption (Ctrl-C, SIGTERM) its process group is killed before this returns.
        """
        cmd = [str(self.path), action, *args, "-o", str(log), "-v4"]
        start = time.monotonic()
        with spawnns.spawning():  # in the test's mount namespace, if it has one
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, close_fds=True, start_new_session=True, env=env,
            )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out = _kill_group(proc)
            said = out.decode(errors="replace").strip()
            raise StageTimeout(
                f"criu {action} did not finish within {timeout:.0f}s (killed); "
                f"command: {' '.join(cmd)}\n{log_excerpt(log)}"
                + (f"\n--- criu stdout/stderr ---\n{said[-OUTPUT_CAP:]}" if said else "")
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        run = CriuRun(cmd, proc.returncode, time.monotonic() - start, log,
                      out.decode(errors="replace"))
        if run.returncode < 0:
            raise CriuFailure(
                f"criu {action} was killed by {signal_name(-run.returncode)}\n{run.excerpt()}"
            )
        if expect_fail and run.returncode == 0:
            raise CriuFailure(
                f"criu {action} succeeded, but the test is marked crfail "
                "(criu was expected to fail cleanly)"
            )
        if not expect_fail and run.returncode != 0:
            raise CriuFailure(
                f"criu {action} exited with status {run.returncode}\n{run.excerpt()}"
            )
        return run


@dataclass
class CriuRun:
    cmd: list[str]
    returncode: int
    duration: float
    log: Path
    output: str

    def excerpt(self) -> str:
        text = log_excerpt(self.log)
        if self.output.strip():
            text += "\n--- criu stdout/stderr ---\n" + self.output.strip()[-OUTPUT_CAP:]
        return f"command: {' '.join(self.cmd)}\n{text}"


def signal_name(signo: int) -> str:
    """SIGKILL for 9; "signal 77" for a number without a name."""
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def returncode_text(rc: int) -> str:
    """A Popen returncode as a user reads it: "exited with status 1", "was killed by SIGKILL"."""
    return f"was killed by {signal_name(-rc)}" if rc < 0 else f"exited with status {rc}"


def read_head_tail(path: Path, head: int = LOG_HEAD_CAP, tail: int = LOG_TAIL_CAP
                   ) -> tuple[list[str], list[str], int]:
    """(lines of the first `head` bytes, lines of the last `tail` bytes, bytes skipped between).

    Bounded whatever the file's size: a runaway criu writes its log at ~13 MB/s."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= head + tail:
            lines = f.read(head + tail).decode(errors="replace").splitlines()
            return lines, [], 0
        first = f.read(head)
        f.seek(size - tail)
        last = f.read(tail)
    head_lines = first.decode(errors="replace").splitlines()[:-1]  # drop the cut line
    tail_lines = last.decode(errors="replace").splitlines()[1:]
    return head_lines, tail_lines, size - head - tail


def log_excerpt(log: Path, tail: int = 15, max_errors: int = 20) -> str:
    """The error lines of a criu log (minus known-harmless ones) and its last lines, reading
    at most the log's first LOG_HEAD_CAP and last LOG_TAIL_CAP bytes."""
    try:
        first, last, skipped = read_head_tail(Path(log))
    except OSError:
        return f"(no criu log at {log})"
    lines = first + last
    errors = [
        ln[:LINE_CAP] for ln in lines
        if _ERROR_LINE.search(ln) and not any(h.search(ln) for h in _HARMLESS)
    ]
    parts = [f"--- {log}: {len(errors)} error line(s) ---", *errors[:max_errors]]
    if len(errors) > max_errors:
        parts.append(f"... {len(errors) - max_errors} more")
    if skipped:
        parts.append(f"({skipped} bytes in the middle of the log not read)")
    parts += [f"--- last {min(tail, len(lines))} lines ---",
              *(ln[:LINE_CAP] for ln in lines[-tail:])]
    return "\n".join(parts)


def _kill_group(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGKILL criu's process group; returns what criu wrote to its stdout/stderr pipe."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        out, _ = proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        proc.kill()
        proc.wait()
        out = b""
    return out or b""


def probe(path: str | Path) -> Criu:
    """Check one binary: exists, runs, is new enough, passes `criu check`."""
    p = Path(path)
    if not p.exists():
        raise CriuNotFound(f"criu binary {p} does not exist")
    if not os.access(p, os.X_OK):
        raise CriuNotFound(f"criu binary {p} is not executable")
    try:
        v = subprocess.run([str(p), "--version"], capture_output=True, text=True,
                           timeout=CHECK_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CriuNotFound(f"criu binary {p}: cannot run '--version': {exc}") from None
    version = _parse_version(v.stdout)
    if not version:
        raise CriuNotFound(f"criu binary {p}: '--version' printed no version: {v.stdout!r}")
    if version < MIN_VERSION:
        raise CriuNotFound(
            f"criu {'.'.join(map(str, version))} at {p} is too old "
            f"(need >= {'.'.join(map(str, MIN_VERSION))}); run ci/provision-criu.sh to build one"
        )
    try:
        c = subprocess.run([str(p), "check"], capture_output=True, text=True,
                           timeout=CHECK_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CriuNotFound(f"criu at {p}: 'criu check' hung for {CHECK_TIMEOUT}s") from None
    if c.returncode != 0:
        why = [ln for ln in (c.stdout + c.stderr).splitlines() if "rror" in ln]
        why = why or [c.stderr.strip()]
        raise CriuNotFound(
            f"criu {'.'.join(map(str, version))} at {p} fails 'criu check': {why[0]}")
    return Criu(p, version)


def candidates(explicit: str | None = None) -> list[tuple[str, Path]]:
    out = []
    if explicit:
        return [("--criu-bin", Path(explicit))]
    if os.environ.get("ZDTM_CRIU"):
        return [("$ZDTM_CRIU", Path(os.environ["ZDTM_CRIU"]))]
    on_path = shutil.which("criu")
    if on_path:
        out.append(("PATH", Path(on_path)))
    cache = cache_dir() / "criu"
    try:  # what ci/provision-criu.sh chose last
        out.append(("provisioned", Path((cache / "selected").read_text().strip())))
    except OSError:
        pass
    for built in sorted(cache.glob("*/criu/criu"), reverse=True):
        out.append(("build cache", built))
    return out


def find_criu(explicit: str | None = None) -> Criu:
    """The first usable criu. An explicit choice (option or env) is never second-guessed."""
    tried = []
    for origin, path in candidates(explicit):
        try:
            return probe(path)
        except CriuNotFound as exc:
            if origin in ("--criu-bin", "$ZDTM_CRIU"):
                raise CriuNotFound(f"{origin}: {exc}") from None
            tried.append(f"{origin}: {exc}")
    detail = "; ".join(tried) or f"no criu on PATH and no build in {cache_dir() / 'criu'}"
    raise CriuNotFound(f"no usable criu ({detail}); run ci/provision-criu.sh or pass --criu-bin")
