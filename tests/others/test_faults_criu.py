"""The fault suite: real criu, real workloads, faults injected at known points of the cycle.

Each test runs pytest on a small project in a subprocess with a wrapped criu (faultkit), makes
one thing go wrong (SIGINT to the run, SIGKILL to criu, a helper, the workload or an xdist
worker, a hung criu under a short timeout), then asserts the stage and cause the report names
and that nothing of the project is left: no process, mount, socket or staging directory.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from faultkit import Fault, make_fault, ns_init, wait_no_leftovers, workload_pids

from zdtmpy.build import cache_root

pytestmark = pytest.mark.criu
# The real build cache, read before pytester points HOME at its temporary directory: inner
# runs share the workloads built once instead of compiling them again each.
BUILD_CACHE = cache_root()


@pytest.fixture
def fault(criu, pytester, monkeypatch) -> Fault:
    # pytester gives the run its own HOME: share the workload build cache, not rebuild it
    monkeypatch.setenv("ZDTMPY_CACHE", str(BUILD_CACHE))
    pytester.makeini("[pytest]\nzdtm_descs = descs\n")
    (pytester.path / "descs").mkdir()
    (pytester.path / "descs" / "pages01.desc").write_text("{}")
    f = make_fault(pytester, criu.path)   # the session's criu (tests/conftest.py)
    yield f
    if f.proc is not None and f.proc.poll() is None:
        f.proc.kill()
        f.proc.wait()
    f.release()


def _clean(f: Fault) -> None:
    left = wait_no_leftovers(f.root)
    assert left == [], "left behind:\n" + "\n".join(left)


def _once(text: str, stage: str) -> None:
    assert f"stage '{stage}'" in text, text
    assert f"stage '{stage}': stage '{stage}'" not in text


# -- Ctrl-C --------------------------------------------------------------------------------

@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("action,hook", [("dump", "post-dump"), ("restore", "post-restore")])
def test_interrupt_during_criu_leaves_nothing(fault, pytester, action, hook, signo):
    """Ctrl-C or SIGTERM while criu dumps (tree frozen) or restores (tree restored, not yet
    resumed): the run unwinds every test's cleanup."""
    fault.pause(action, hook)
    fault.start(pytester, "--zdtm-mode", "plain")
    fault.wait_paused()
    fault.interrupt(signo)
    out = fault.finish()
    assert "KeyboardInterrupt" in out, out
    _clean(fault)


def test_sigint_during_a_lazy_restore_leaves_nothing(fault, pytester):
    """Resumed tasks whose pages (their environment too) were never served: Ctrl-C."""
    fault.pause("restore", "post-resume")
    fault.start(pytester, "--zdtm-mode", "lazy")
    fault.wait_paused()
    fault.interrupt()
    out = fault.finish()
    assert "KeyboardInterrupt" in out, out
    _clean(fault)


def test_sigint_with_xdist_leaves_nothing(fault, pytester):
    fault.pause("restore", "post-restore")
    fault.start(pytester, "--zdtm-mode", "plain", "-n", "2", "-p", "xdist")
    fault.wait_paused()
    fault.interrupt()
    fault.finish()
    _clean(fault)


def test_sigkill_of_an_xdist_worker_leaves_nothing(fault, pytester):
    """The worker running the test dies mid-restore: the controller sweeps what it owned."""
    fault.pause("restore", "post-restore")
    fault.start(pytester, "--zdtm-mode", "plain", "-n", "1", "-p", "xdist")
    criu = fault.wait_paused()
    worker = _ancestor_worker(criu, fault.proc.pid)
    os.kill(worker, signal.SIGKILL)
    out = fault.finish()
    assert "crashed" in out or "worker" in out, out
    _clean(fault)


def _ancestor_worker(pid: int, controller: int) -> int:
    """The xdist worker under `controller` that `pid` descends from."""
    while True:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        if ppid == controller:
            return pid
        if ppid <= 1:
            raise AssertionError(f"criu is not under the pytest run {controller}")
        pid = ppid


# -- criu killed or hung ---------------------------------------------------------------------

@pytest.mark.parametrize("action,hook", [("dump", "post-dump"), ("restore", "post-restore")])
def test_criu_killed_is_named_with_its_signal(fault, pytester, action, hook):
    fault.pause(action, hook)
    fault.start(pytester, "--zdtm-mode", "plain")
    os.kill(fault.wait_paused(), signal.SIGKILL)
    fault.release()
    out = fault.finish()
    _once(out, action)
    assert f"criu {action} was killed by SIGKILL" in out, out
    assert "Traceback" not in out
    _clean(fault)


def test_hung_criu_times_out_and_its_restored_tree_dies(fault, pytester):
    """criu stops after restoring the tree (other session, other PID namespace): the stage
    timeout kills criu and the tree, keeps criu's output, names the stage once."""
    fault.pause("restore", "post-restore")
    fault.start(pytester, "--zdtm-mode", "plain", "--zdtm-timeout", "5")
    fault.wait_paused()
    out = fault.finish()
    _once(out, "restore")
    assert "criu restore did not finish within 10s (killed)" in out, out
    _clean(fault)


# -- the workload and the helpers --------------------------------------------------------------

def test_restored_workload_killed_before_the_check_is_named(fault, pytester):
    fault.pause("restore", "post-resume")
    fault.start(pytester, "--zdtm-mode", "plain")
    fault.wait_paused()
    init = ns_init(workload_pids(fault.root, "pages01"))
    os.kill(init, signal.SIGKILL)
    fault.release()
    out = fault.finish()
    _once(out, "visible-state")
    assert f"restored process {init} (the tree's init) was killed by SIGKILL" in out, out
    assert "mapping" not in out
    _clean(fault)


def test_workload_killed_during_the_dump_is_named(fault, pytester):
    fault.pause("dump", "pre-dump")
    fault.start(pytester, "--zdtm-mode", "plain")
    fault.wait_paused()
    os.kill(ns_init(workload_pids(fault.root, "pages01")), signal.SIGKILL)
    fault.release()
    out = fault.finish()
    _once(out, "dump")
    assert "the workload (pid " in out and ") was killed by SIGKILL" in out, out
    _clean(fault)


@pytest.mark.parametrize("mode", ["lazy", "remote-lazy-criu"])
def test_killed_lazy_helper_is_blamed_not_the_workload(fault, pytester, mode):
    """A helper feeding lazy pages dies after the restore: the report names its death."""
    helper = "lazy-pages" if mode == "lazy" else "page-server"
    fault.pause("restore", "post-restore")  # before the tree runs: no page is fetched yet
    fault.start(pytester, "--zdtm-mode", mode, "--zdtm-timeout", "5")
    fault.wait_paused()
    os.kill(fault.helper_pid(helper), signal.SIGKILL)
    fault.release()
    out = fault.finish()
    assert f"criu {helper} was killed by SIGKILL" in out, out
    assert "workload says FAIL" not in out.split("short test summary")[-1]
    _clean(fault)


def test_killed_criu_page_server_during_dump_is_blamed(fault, pytester):
    fault.pause("dump", "pre-dump")
    fault.start(pytester, "--zdtm-mode", "page-server-criu")
    fault.wait_paused()
    os.kill(fault.helper_pid("page-server"), signal.SIGKILL)
    fault.release()
    out = fault.finish()
    assert "criu page-server was killed by SIGKILL" in out, out
    _clean(fault)


@pytest.mark.parametrize("action,hook,streamer",
                         [("dump", "pre-dump", "capture"), ("restore", "pre-restore", "serve")])
def test_killed_streamer_is_blamed(fault, pytester, action, hook, streamer):
    fault.pause(action, hook)
    fault.start(pytester, "--zdtm-mode", "stream")
    fault.wait_paused()
    os.kill(_streamer_pid(fault.root, streamer), signal.SIGKILL)
    fault.release()
    out = fault.finish()
    assert f"zdtmpy stream {streamer} was killed by SIGKILL" in out, out
    assert "Traceback" not in out
    _clean(fault)


def _streamer_pid(root: Path, action: str) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"zdtmpy.cli" in argv and action.encode() in argv and \
                    any(str(root).encode() in a for a in argv):
                return int(entry)
    raise AssertionError(f"no zdtmpy stream {action} running")


# -- disk full -------------------------------------------------------------------------------

@pytest.fixture
def small_disk(fault):
    """A 4 MiB tmpfs for the test directories: the workload starts, its images do not fit."""
    import subprocess

    mnt = fault.root / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "zdtmpy-full", str(mnt)],
                   check=True, timeout=30)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True, timeout=30)


@pytest.mark.parametrize("mode,stage", [("page-server", "page-server"),
                                        ("stream", "stream-capture")])
def test_disk_full_names_the_stage_and_enospc(fault, pytester, small_disk, mode, stage):
    fault.start(pytester, "--zdtm-mode", mode, "--zdtm-results", str(small_disk))
    out = fault.finish()
    headline = [ln for ln in out.splitlines() if "pages01[" in ln and "stage '" in ln]
    assert headline, out
    assert f"stage '{stage}'" in headline[0], out
    assert "No space left on device" in out, out
    assert "Broken pipe" not in headline[0]
    assert "Traceback" not in out
    left = wait_no_leftovers(fault.root, results=small_disk, mine="zdtmpy-full")
    assert left == [], "left behind:\n" + "\n".join(left)


# -- a runaway restore ---------------------------------------------------------------------

SHORT_PAGES = '''
def pytest_zdtm_after_dump(item, images):
    pages = max(images.glob("pages-*.img"), key=lambda p: p.stat().st_size)
    with open(pages, "r+b") as f:
        f.truncate(pages.stat().st_size - 4096)
'''


def test_runaway_restore_is_killed_and_its_log_read_bounded(fault, pytester):
    """A pages file one page short: criu 4.1.1's restore spins writing its log (fixed
    upstream later; newer criu fails cleanly). Either way: the stage is named, every process
    dies, and the report reads a bounded part of the log."""
    pytester.makeconftest(SHORT_PAGES)
    fault.start(pytester, "--zdtm-mode", "plain", "--zdtm-no-oracle", "--zdtm-timeout", "5")
    out = fault.finish()
    _once(out, "restore")
    assert fault.max_rss_kib < 300 * 1024, f"the run's peak RSS: {fault.max_rss_kib} KiB"
    _clean(fault)
