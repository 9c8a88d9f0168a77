"""Checkpoint/restore cycles: one module per mode family, built from the steps in `Run`.

A cycle function takes a `Run` and drives it: start the workload, dump, transform images,
restore, stop. `Run` owns everything the cycle starts and tears it all down at the end,
pass or fail, so a cycle never has to clean up after itself.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Protocol

from .. import isolation, marker, procstate
from ..criu import Criu, CriuRun
from ..errors import StageTimeout, WorkloadError, ZdtmError
from .attachment import Attachment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..criuapi import CriuBackend
    from ..descriptor import Descriptor
    from ..matrix import Mode, Variant
    from ..workload import Manifest, Verdict


class WorkloadHandle(Protocol):
    """What a cycle needs of a started workload: zdtmpy's `workload.Workload`, or another
    test source's (the upstream corpus)."""

    outfile: Path

    def start(self) -> int: ...
    def manifest(self) -> Manifest: ...
    def next_step(self, pid: int, timeout: float = 30) -> Manifest: ...
    def wait_launcher(self, timeout: float = 30) -> int: ...
    def stop(self, pid: int, timeout: float = 30) -> Verdict: ...
    def kill(self) -> None: ...


class PidNamespace(Protocol):
    """A PID namespace criu and the test run in while the runner stays outside (flavor-h
    upstream tests): pids cross its border translated."""

    def to_ns(self, host_pid: int) -> int: ...
    def to_host(self, ns_pid: int) -> int: ...


@dataclass
class RunOptions:
    keep: bool = False  # keep the test directory even on success
    norst: bool = False  # ZDTM's --norst: dump with --leave-running, no restore
    timeout: float = 30.0  # base timeout for one stage
    oracle: bool = True  # compare image pages with the workload's manifest
    static_dirs: tuple[Path, ...] = ()  # where to look for <workload>.c before zdtmpy's own


class StageError(ZdtmError):
    """A failure tagged with the stage it happened in."""

    def __init__(self, stage: str, test: str, message: str):
        message = message.removeprefix(f"stage '{stage}': ")  # said once is enough
        super().__init__(f"{test}: stage '{stage}': {message}")
        self.stage = stage
        self.detail = message

    def after(self) -> str:
        """This failure as the consequence of another cause: "in stage 'x': ..." """
        return f"in stage '{self.stage}': {self.detail}"


def followed(failure: Exception) -> str:
    """A failure told as the consequence of an earlier cause (no second test id)."""
    return failure.after() if isinstance(failure, StageError) else str(failure)


@dataclass(frozen=True)
class Started:
    """A workload as it was before its first dump: what every cycle compares against."""

    pid: int  # host pid of the namespace init
    before: dict[int, procstate.ProcState]  # procstate.capture() of the tree
    manifest: Manifest  # at step 0
    host_tree: list[int]  # host pids of the tree, to check they are gone after the dump


@dataclass
class Run:
    """One test item's run: its directory, its criu, its cleanup, its timings."""

    test: str  # item id, for messages
    desc: Descriptor
    variant: Variant
    criu: Criu
    workdir: Path
    options: RunOptions = field(default_factory=RunOptions)
    timings: dict[str, float] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    after_dump: Callable[[Path], None] | None = None  # e.g. a conftest hook, via the runner
    # Another source of tests (the upstream corpus): starts the workload instead of
    # build_workload + Workload, and is told of the cycle's call points ('pre-dump', ...).
    launch: Callable[[Run], WorkloadHandle] | None = None
    event: Callable[[str, int | None, Path | None], None] | None = None
    _cleanups: list[Callable[[], object]] = field(default_factory=list)
    _stage: str = "setup"
    workload: WorkloadHandle | None = None
    failed_stage: str | None = None  # the innermost stage an exception left first
    # image dir -> compress.stats.image_bytes
    image_sizes: dict[str, Any] = field(default_factory=dict)
    # Every process of this run carries marker.env(tag): cleanup kills them all by it, even
    # ones only criu knew (a half-restored tree, a task in another session).
    tag: str = field(default_factory=marker.new_tag)
    _backend: CriuBackend | None = None
    # Set when criu runs in the test's PID namespace (and takes and writes its pids).
    pidns: PidNamespace | None = None

    # -- bookkeeping -------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; tag any error escaping it with the stage name."""
        prev, self._stage = self._stage, name
        start = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.failed_stage = self.failed_stage or name
            if isinstance(exc, ZdtmError) and not isinstance(exc, StageError):
                raise StageError(name, self.test, str(exc)) from exc
            raise
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - start
            self._stage = prev

    def notify(self, point: str, pid: int | None = None, images: Path | None = None) -> None:
        """Tell the test source about a call point of the cycle (upstream's .hook)."""
        if self.event is not None:
            with self.stage(f"hook {point}"):
                self.event(point, pid, images)

    def fail(self, message: str) -> NoReturn:
        self.failed_stage = self.failed_stage or self._stage
        raise StageError(self._stage, self.test, message)

    def attach(self, title: str, path: Path | None = None, text: str | None = None,
               criu_log: bool = False) -> None:
        self.attachments.append(Attachment(title, path, text, criu_log))

    def on_cleanup(self, fn: Callable[[], object]) -> None:
        self._cleanups.append(fn)

    def cleanup(self) -> list[str]:
        """Run cleanups newest first, then kill whatever still carries this run's mark;
        return what went wrong (never raises)."""
        problems = []
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # cleanup must go on whatever happened
                problems.append(f"cleanup {getattr(fn, '__name__', fn)}: {exc}")
        try:  # e.g. a tree criu restored before an interrupt, never registered
            self.kill_marked()
        except Exception as exc:
            problems.append(f"cleanup kill_marked: {exc}")
        return problems

    def kill_marked(self) -> list[int]:
        return marker.kill_tagged(self.tag)

    def env(self) -> dict[str, str]:
        """The environment of every process this run starts."""
        return marker.env(self.tag)

    def path(self, name: str) -> Path:
        return self.workdir / name

    def criu_pid(self, host_pid: int) -> int:
        """A host pid of the test's as criu takes it (`-t`)."""
        return host_pid if self.pidns is None else self.pidns.to_ns(host_pid)

    def host_pid(self, criu_pid: int) -> int:
        """A pid criu wrote (a restore's --pidfile), as the runner's host pid."""
        return criu_pid if self.pidns is None else self.pidns.to_host(criu_pid)

    def timeout(self, factor: float = 1.0) -> float:
        return max(self.options.timeout, float(self.desc.timeout or 0)) * factor

    # -- workload ----------------------------------------------------------------------
    def started(self) -> WorkloadHandle:
        """The workload start_workload() started."""
        if self.workload is None:
            raise WorkloadError(f"{self.test}: no workload was started")
        return self.workload

    def start_workload(self) -> int:
        from ..workload import Workload, build_workload

        if self.launch is not None:
            wl = self.launch(self)
            self.workload = wl
            self.on_cleanup(wl.kill)
            self.attach("test output", text=None, path=wl.outfile)
            with self.stage("start"):
                pid = wl.start()
            self.notify("post-start", pid)
            return pid
        with self.stage("build"):
            where = next((d for d in self.options.static_dirs
                          if (d / f"{self.desc.workload}.c").exists()), None)
            exe = build_workload(self.desc.workload, static_dir=where)
        with self.stage("start"):
            wl = Workload(exe, self.workdir, args=self.desc.args, start_timeout=self.timeout(),
                          env=self.env())
            self.workload = wl
            self.on_cleanup(wl.kill)
            self.attach("workload output", wl.outfile)
            pid = wl.start()
        return pid

    def start_recorded(self) -> Started:
        """Start the workload and record its visible state and manifest."""
        pid = self.start_workload()
        with self.stage("visible-state"):
            before = self.capture_state(pid)
            manifest = self.started().manifest()
        return Started(pid, before, manifest, isolation.tree_pids(pid))

    @property
    def norst(self) -> bool:
        """ZDTM's --norst for this test: no restore, unless the test is flagged reqrst."""
        return self.options.norst and not self.desc.has("reqrst")

    def verify_restored(self, started: Started, new_pid: int) -> None:
        """The restored tree looks like the dumped one, and the workload says PASS."""
        self.compare_state(started.before, new_pid)
        self.stop_workload(new_pid)

    def stop_workload(self, pid: int) -> None:
        """SIGTERM the (restored) tree and require PASS."""
        with self.stage("verdict"):
            verdict = self.started().stop(pid, timeout=self.timeout())
            if verdict.status != "PASS":
                self.fail(f"workload says {verdict.status}: {verdict.detail}")

    # -- criu --------------------------------------------------------------------------
    @property
    def backend(self) -> CriuBackend:
        """How criu actions run: the variant's criu API (command line or RPC)."""
        if self._backend is None:
            from ..criuapi import backend_for

            self._backend = backend_for(self.criu, getattr(self.variant, "api", "cli"))
        return self._backend

    def criu_run(self, action: str, args: list[str], log_name: str, stage: str,
                 expect_fail: bool = False) -> CriuRun:
        log = self.path(log_name)
        self.attach(f"criu {action} log ({log_name})", log, criu_log=True)
        try:
            return self.backend.run(action, args, log=log, stage=stage, timeout=self.timeout(2),
                                    expect_fail=expect_fail, env=self.env())
        except StageTimeout:
            self.kill_marked()  # criu's group is dead; restored tasks may live elsewhere
            raise

    def dump(self, pid: int, images: Path, extra: tuple[str, ...] | list[str] = (), *,
             log_name: str = "dump.log", stage: str = "dump",
             leave_running: bool = False) -> CriuRun:
        images.mkdir(parents=True, exist_ok=True)
        args = ["-t", str(self.criu_pid(pid)), "-D", str(images), *self.desc.opts,
                *self.desc.dopts, *extra]
        if leave_running:
            args.append("--leave-running")
        self.notify("pre-dump", pid, images)
        with self.stage(stage):
            try:
                return self.criu_run("dump", args, log_name, stage,
                                     expect_fail=self.desc.has("crfail"))
            except ZdtmError as exc:
                self.blame_workload(pid, exc)  # a failed dump resumes the tree: it must live
                raise

    def blame_workload(self, pid: int, failure: Exception) -> None:
        """If the workload died, that (with its signal) is the cause of `failure`."""
        death = getattr(self.workload, "death", None)
        if death is None or isolation.alive(pid):
            return
        deadline = time.monotonic() + 2.0  # the launcher mirrors the init's end: a moment
        while (how := death()) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if how is not None:
            self.fail(f"the workload (pid {pid}) {how}; what followed: {followed(failure)}")

    def wait_tree_gone(self, tree: list[int]) -> None:
        """After a dump: the launcher exits, and no process of the old tree survives."""
        with self.stage("dump"):
            self.started().wait_launcher(self.timeout())
            for pid in tree:
                if not isolation.wait_gone(pid, self.timeout()):
                    self.fail(f"process {pid} of the dumped tree is still alive after the dump")

    def dumped(self, images: Path) -> None:
        """The dump is complete and its tree gone: let extensions see the images."""
        if self.after_dump is not None:
            with self.stage("after-dump-hook"):
                self.after_dump(images)

    def restore(self, images: Path, extra: tuple[str, ...] | list[str] = (), *,
                log_name: str = "restore.log", stage: str = "restore") -> int:
        pidfile = self.path(f"{log_name}.pid")
        args = ["-D", str(images), "-d", "--pidfile", str(pidfile),
                *self.desc.opts, *self.desc.ropts, *extra]
        self.notify("pre-restore", None, images)
        with self.stage(stage):
            self.criu_run("restore", args, log_name, stage)
            try:
                pid = int(pidfile.read_text())
            except (OSError, ValueError) as exc:
                raise WorkloadError(
                    f"criu restore wrote no usable pidfile {pidfile}: {exc}") from None
            pid = self.host_pid(pid)
            self.on_cleanup(lambda: isolation.kill_and_reap(pid))
        self.notify("post-restore", pid, images)
        return pid

    # -- checks ------------------------------------------------------------------------
    def capture_state(self, pid: int) -> dict[int, procstate.ProcState]:
        # A workload may see more (upstream tests: mount tables, as zdtm.py compares them).
        return procstate.capture(pid, mounts=getattr(self.workload, "state_mounts", False))

    def compare_state(self, before: dict[int, procstate.ProcState], pid: int) -> None:
        left: list[str] = getattr(self.workload, "restore_leftovers", lambda: [])()
        if left:
            with self.stage("visible-state"):
                self.fail("\n  ".join(["restore left files behind:", *left]))
        if not getattr(self.workload, "state_comparable", True):
            return  # e.g. upstream's transition tests change their mappings all the time
        with self.stage("visible-state"):
            self.require_alive(pid)
            differ = getattr(self.workload, "state_differences", procstate.differences)
            diffs = differ(before, self.capture_state(pid))
            if diffs:
                time.sleep(0.1)  # a process killed while we looked may still be exiting
                self.require_alive(pid)
                self.fail("restored tree differs from the dumped one:\n  " + "\n  ".join(diffs))

    def require_alive(self, pid: int) -> None:
        """A restored init that died is reported as such (which pid, which signal), not as
        the lost mappings or data a look at its remains would suggest."""
        how = isolation.death(pid)
        if how is not None:
            self.fail(f"restored process {pid} (the tree's init) {how} before the check")

    def check_images(self, images: Path, manifest: Manifest | None = None,
                     layer_note: str = "") -> None:
        """The page-content oracle: every manifest page, read back from the images."""
        from ..compress.stats import image_bytes

        self.image_sizes[str(images)] = image_bytes(images)  # every set checked, for reports
        if not self.options.oracle:
            return
        from .. import oracle

        own_check = getattr(self.workload, "image_problems", None)  # no manifest (corpus)
        with self.stage("oracle"):
            if own_check is not None:
                problems = own_check(images)
                if problems:
                    self.fail(f"images disagree with criu's own account{layer_note}:\n  "
                              + "\n  ".join(problems))
                return
            manifest = manifest or self.started().manifest()
            problems = oracle.check(images, manifest)
            if problems:
                self.fail(f"image pages differ from the workload's manifest{layer_note}:\n  "
                          + "\n  ".join(problems))

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def cycle_function(mode: Mode) -> Callable[[Run], None]:
    module, func = mode.cycle.split(":")
    fn: Callable[[Run], None] = getattr(importlib.import_module(f"{__name__}.{module}"), func)
    return fn


def prepare_workdir(root: Path, name: str) -> Path:
    path = root / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.chmod(path, 0o755)
    return path
