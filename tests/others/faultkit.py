"""Fault injection around a real criu, for the fault suite (test_faults_criu.py).

The criu under test is wrapped by a small shell script. When the control directory holds
`pause-<action>` naming a criu action-script hook (e.g. `post-restore`), that criu action runs
with a hook that writes `paused` and waits for `release`: the test then kills whatever it
wants (criu, a helper, the workload, the pytest run) at a known point of the cycle.
Helpers (`lazy-pages`, `page-server`) write their pid to `<action>.pid` (exec keeps the pid).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WRAPPER = """#!/bin/sh
ctl={ctl}
act="$1"
case "$act" in
lazy-pages|page-server) echo $$ > "$ctl/$act.pid" ;;
esac
if [ -e "$ctl/pause-$act" ]; then
	exec {real} "$@" --action-script "$ctl/hook.sh"
fi
exec {real} "$@"
"""

HOOK = """#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = "$(cat {ctl}/pause-{act})" ] || exit 0
echo $PPID > {ctl}/paused
while [ ! -e {ctl}/release ]; do sleep 0.02; done
exit 0
"""


def _default_sigint() -> None:
    """The inner run must take Ctrl-C as a terminal user's pytest does. A shell runs
    background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN (no
    KeyboardInterrupt at all), so a CI job started that way would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Fault:
    """A project, a wrapped criu, one inner pytest run."""

    root: Path
    ctl: Path
    criu: Path
    proc: subprocess.Popen | None = None
    max_rss_kib: int = 0  # peak RSS of the inner run (and what it reaped), from wait4

    def pause(self, action: str, hook: str) -> None:
        """criu ACTION stops at action-script HOOK (pre-dump, post-dump, post-restore, ...)."""
        (self.ctl / f"pause-{action}").write_text(hook + "\n")
        path = self.ctl / "hook.sh"
        path.write_text(HOOK.format(ctl=self.ctl, act=action))
        path.chmod(0o755)

    def start(self, pytester, *args: str) -> None:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
               "--criu-bin", str(self.criu), "--zdtm-compress", "off", "descs", *args]
        self.proc = pytester.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=str(self.root),
                                   preexec_fn=_default_sigint)

    def wait_paused(self, timeout: float = 90) -> int:
        """Wait for the hook; returns the pid of the paused criu."""
        deadline = time.monotonic() + timeout
        paused = self.ctl / "paused"
        while not paused.exists() or not paused.read_text().strip():
            if self.proc.poll() is not None:
                raise AssertionError("the run ended before criu paused:\n" + self.output())
            if time.monotonic() > deadline:
                raise AssertionError(f"criu did not pause within {timeout}s")
            time.sleep(0.02)
        return int(paused.read_text())

    def release(self) -> None:
        (self.ctl / "release").touch()

    def helper_pid(self, action: str) -> int:
        return int((self.ctl / f"{action}.pid").read_text())

    def finish(self, timeout: float = 120) -> str:
        """Wait for the inner run (recording its peak RSS); its whole output."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.max_rss_kib = usage.ru_maxrss
                return self.output()
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the run did not end within {timeout}s")
            time.sleep(0.05)

    def output(self) -> str:
        if self.proc.stdout is None or self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read().decode(errors="replace")

    def interrupt(self, signo: int = signal.SIGINT) -> None:
        os.kill(self.proc.pid, signo)

    def leftovers(self) -> list[str]:
        return leftovers(self.root)


def make_fault(project, real_criu: Path) -> Fault:
    ctl = project.path / "ctl"
    ctl.mkdir()
    wrapper = ctl / "criu"
    wrapper.write_text(WRAPPER.format(ctl=ctl, real=real_criu))
    wrapper.chmod(0o755)
    return Fault(project.path, ctl, wrapper)


def leftovers(root: Path, results: Path | None = None) -> list[str]:
    """Processes, mounts, unix sockets and staging directories of this project still around.

    A process counts when its working directory or command line lies inside the project
    (workloads run in their test directory, criu in the run's directory, restored trees
    keep the dumped working directory); other sessions on this machine never do."""
    top = str(root)

    def inside(path: str) -> bool:
        return path == top or path.startswith(top + "/")

    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read(4096).replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if inside(cwd) or top + "/" in cmd:
            out.append(f"process {entry}: {cmd.strip()} (cwd {cwd})")
    with open("/proc/self/mountinfo") as f:
        out += [f"mount: {ln.strip()}" for ln in f if top in ln]
    with open("/proc/net/unix") as f:
        out += [f"socket: {ln.strip()}" for ln in f if top in ln]
    results = results or root / "zdtm-results"
    if results.exists():
        for pattern in (".zdtmpy-stage*", ".zdtmpy-ps-*"):
            out += [f"staging dir: {p}" for p in results.rglob(pattern)]
    return out


def wait_no_leftovers(root: Path, timeout: float = 5, results: Path | None = None,
                      mine: str = "\0") -> list[str]:
    """Leftovers that are still there after `timeout` (a killed process takes a moment);
    lines containing `mine` (e.g. the test's own tmpfs) do not count."""
    deadline = time.monotonic() + timeout
    while True:
        left = [ln for ln in leftovers(root, results) if mine not in ln]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def workload_pids(root: Path, exe_name: str) -> list[int]:
    """Live processes of a workload executable running inside the project."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if Path(exe.removesuffix(" (deleted)")).name.startswith(exe_name) and \
                cwd.startswith(str(root) + "/"):
            out.append(int(entry))
    return out


def ns_init(pids: list[int]) -> int:
    """The one of `pids` that is PID 1 of its namespace."""
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:") and line.split()[-1] == "1":
                    return pid
    raise AssertionError(f"no namespace init among {pids}")
