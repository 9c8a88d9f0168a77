"""The upstream test protocol, behind the workload interface the cycles use.

Upstream starts a test as `./NAME --pidfile=NAME.pid --outfile=NAME.out [group args]` in the
test's directory. The process daemonizes: the launcher exits once the test is ready, after
writing the pidfile (the host pid of the test, or of its namespace init in flavor ns). The
test writes its log to `NAME.out.inprogress` and renames it to `NAME.out` when it exits; on
SIGTERM it checks its state and the last line of `NAME.out` says `PASS` or why not.

Upstream tests have no manifest of their memory and no steps: `manifest()` is empty (the
page oracle then checks nothing) and `next_step()` only counts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .. import spawnns
from ..errors import WorkloadError, ZdtmError
from ..isolation import alive, children, terminate, tree_pids, wait_status
from ..procstate import ProcState
from ..workload import Manifest, Verdict
from . import makefile, state
from .suite import UpstreamTest

if TYPE_CHECKING:
    from ..cycle import PidNamespace

_POLL = 0.005
_SHOW = 8000  # bytes of a log shown in a failure


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, limit: int = _SHOW) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return data if size <= limit else f"... ({size - limit} bytes cut)\n{data}"


class UpstreamWorkload:
    """One run of an upstream test in `workdir` (its binary is copied there, as `./NAME`)."""

    def __init__(self, test: UpstreamTest, exe: Path, workdir: Path, env: dict[str, str],
                 start_timeout: float = 30, cwd: Path | None = None,
                 on_spawned: Callable[[int], None] | None = None, flavor: str = "ns",
                 pidns: PidNamespace | None = None, link_remap: bool = False):
        self.test = test
        self.exe = exe
        self.workdir = Path(workdir)
        self.env = dict(env)
        self.start_timeout = start_timeout
        # Where the test starts: workdir, seen through the ns root's mount in flavor ns (the
        # test keeps its cwd across pivot_root only if it is on the mount that becomes /).
        self.cwd = Path(cwd) if cwd is not None else self.workdir
        # Upstream calls the hook's --post-start while the test is still starting (some
        # tests wait for what the hook sets up before they report ready).
        self.on_spawned = on_spawned
        # Flavor h: the test runs in a PID namespace of its own, its pidfile holds its pid there.
        self.pidns = pidns
        self.name = test.name
        short = test.short
        self.pidfile = self.workdir / f"{short}.pid"
        self.outfile = self.workdir / f"{short}.out"
        self.inprogress = self.workdir / f"{short}.out.inprogress"
        self.launcher_log = self.workdir / "launcher.out"
        self.pid: int | None = None
        self.written_pid: int | None = None  # as in the pidfile (h: in the test's PID ns)
        self._pids: set[int] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self._step = 0
        self.state_comparable = state.comparable(test.subdir, flavor)
        self.state_mounts = self.state_comparable   # zdtm.py compares mount tables too
        # criu's --link-remap links of unlinked files must be gone after a restore
        self.link_remap = link_remap

    def __repr__(self) -> str:
        return f"UpstreamWorkload({self.name}, pid={self.pid}, workdir={self.workdir})"

    # -- what a failure shows --------------------------------------------------------------
    def output(self) -> str:
        parts = []
        for title, path in (("", self.outfile),
                            (f"{self.inprogress.name} (the test never finished)",
                             self.inprogress),
                            ("launcher stdout/stderr", self.launcher_log)):
            text = _tail(path).rstrip()
            if text:
                parts.append(f"--- {title} ---\n{text}" if title else text)
        return "\n".join(parts)

    def _error(self, stage: str, what: str) -> WorkloadError:
        return WorkloadError(f"{self.name}: stage '{stage}': {what}; test output "
                             f"({self.workdir}):\n{self.output() or '(empty)'}")

    def restore_leftovers(self) -> list[str]:
        """As zdtm.py, for a test dumped with --link-remap: the link_remap.* files criu made
        beside the test's unlinked files, still there after the restore."""
        if not self.link_remap:
            return []
        return sorted(str(p) for p in self.workdir.glob("link_remap*"))

    def state_differences(self, before: dict[int, ProcState],
                          after: dict[int, ProcState]) -> list[str]:
        """Upstream's rules (corpus/state.py): what zdtm.py would see fails the item; a
        difference in a process zdtm.py never compares is a warning."""
        checked, unchecked = state.split(before, after)
        if unchecked:
            warnings.warn(state.UncheckedDifference(
                f"{self.name}: restored tree differs in processes zdtm.py never compares "
                "(a warning, not a failure):\n  " + "\n  ".join(unchecked)), stacklevel=2)
        return checked

    # -- protocol --------------------------------------------------------------------------
    def start(self) -> int:
        if self._proc is not None:
            raise WorkloadError(f"{self.name}: stage 'start': already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        local = self.workdir / self.test.short
        shutil.copy2(self.exe, local)
        cmd = makefile.command(Path(f"./{self.test.short}"), self.test.short, self.test.argv)
        cmd[0] = f"./{self.test.short}"
        with open(self.launcher_log, "ab") as log:
            try:
                with spawnns.spawning():  # flavor h: in the test's namespaces
                    self._proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env,
                                                  stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=log, close_fds=True)
            except OSError as exc:
                raise WorkloadError(f"{self.name}: stage 'start': cannot run {local}: "
                                    f"{exc}") from None
        if self.on_spawned is not None:
            try:
                self.on_spawned(self._proc.pid)
            except BaseException:
                self.kill()
                raise
        rc = self._wait_launcher_exit()
        written = self.written_pid = self._read_pidfile()
        pid = self._on_host(written)
        if rc != 0 or pid is None:
            if pid is not None:
                self._pids.add(pid)
            self.kill()
            why = ("" if written is None or pid is not None
                   else f" (pid {written} of its pidfile is not running)")
            raise self._error("start", f"the launcher exited with status {rc}" + why
                              + ("" if written else " without writing its pidfile"))
        self.pid = pid
        self._pids.add(pid)
        if not alive(pid):
            raise self._error("start", f"pid {pid} from the pidfile is not running")
        return pid

    def _wait_launcher_exit(self) -> int:
        """The launcher exits once the test is ready. If the test dies first, upstream's
        launcher waits forever on a futex: notice that instead of waiting for the timeout."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        orphaned_since = None
        while (rc := self._proc.poll()) is None:
            now = time.monotonic()
            if now >= deadline:
                self.kill()
                raise self._error("start", f"not ready within {self.start_timeout:g} s "
                                           "(killed)")
            kids = children(self._proc.pid)
            if kids and not any(alive(k) for k in kids):
                orphaned_since = orphaned_since or now
                if now - orphaned_since > 0.5:
                    self.kill()
                    raise self._error("start", "the test process exited before it was ready "
                                               "(its launcher waits forever; killed)")
            else:
                orphaned_since = None
            time.sleep(_POLL)
        return rc

    def _read_pidfile(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _on_host(self, pid: int | None) -> int | None:
        """The host pid of a pid the test wrote (None if no such process runs)."""
        if pid is None or self.pidns is None:
            return pid
        try:
            return self.pidns.to_host(pid)
        except ZdtmError:
            return None

    def manifest(self) -> Manifest:
        return Manifest(step=self._step, regions=())

    def next_step(self, pid: int, timeout: float = 30) -> Manifest:
        self._step += 1
        return self.manifest()

    def wait_launcher(self, timeout: float = 30) -> int:
        """After a dump: the launcher is long gone; reap the dumped tree's zombies (we are
        their subreaper), whose pids a restore in the same pid namespace needs free."""
        if self._proc is None:
            raise WorkloadError(f"{self.name}: stage 'wait-launcher': not started")
        if self.pid is not None:
            for child in children(os.getpid()):
                if _session_of(child) == self.pid and not alive(child):
                    with contextlib.suppress(ChildProcessError, OSError):
                        os.waitpid(child, os.WNOHANG)
        return self._proc.wait(timeout)

    def stop(self, pid: int, timeout: float = 30) -> Verdict:
        """SIGTERM, wait for the test to exit, then read its verdict as upstream does."""
        self._pids.add(pid)
        terminate(pid, timeout, kill=self._kill_tree, fail=lambda what: self._error("stop", what))
        deadline = time.monotonic() + 2
        while not self.outfile.exists() and time.monotonic() < deadline:
            time.sleep(_POLL)  # a restored test's children may still be writing
        out = _tail(self.outfile)
        last = out.strip().splitlines()[-1:] if out.strip() else []
        if last and "PASS" in last[0].split():
            return Verdict("PASS", "", out)
        detail = last[0].strip() if last else f"no {self.outfile.name} written"
        return Verdict("FAIL", f"{detail}\n{self.output()}", out)

    def image_problems(self, images: Path) -> list[str]:
        """Without a manifest: every page criu says it wrote (stats-dump) is in the pagemaps.
        Chain layers (parent link) and lazy dumps keep pages elsewhere: not counted."""
        from ..cycle.stream import count_pages, count_problems, dump_stats

        if (images / "parent").exists() or not (images / "stats-dump").exists():
            return []
        stats = dump_stats(images)
        if stats.pages_lazy:
            return []
        return [f"{images}: {p}" for p in count_problems(stats, *count_pages(images))]

    # -- cleanup ---------------------------------------------------------------------------
    def _kill_tree(self, pid: int) -> None:
        if not alive(pid) or _session_of(pid) != pid:
            return  # gone, or the pid now belongs to someone else (tests are session leaders)
        for p in reversed(tree_pids(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            wait_status(pid, 5)

    def kill(self) -> None:
        """SIGKILL whatever of this test still runs and reap it. Idempotent."""
        if self._proc is not None and self._proc.poll() is None:
            for child in children(self._proc.pid):
                self._pids.add(child)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        for pid in sorted(self._pids):
            self._kill_tree(pid)
