"""Machine-wide corpus setup shared by sessions: first in sets up, last out undoes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time

import pytest

from zdtmpy.corpus import cgholder, sysprep, tmpleft
from zdtmpy.registry import Registry


@pytest.fixture(autouse=True)
def stand_in_tmp(tmp_path, monkeypatch):
    """A last session out here must not rmdir in the host's /tmp: another worker's upstream
    test may be between its mkdir and its mount there."""
    tmp = tmp_path / "host-tmp"
    tmp.mkdir()
    monkeypatch.setattr(tmpleft, "TMP", tmp)
    return tmp


def test_first_session_raises_last_session_restores(tmp_path, monkeypatch):
    monkeypatch.setattr(sysprep, "HIERARCHIES", ())  # cgroups: not on a stand-in
    monkeypatch.setattr(sysprep.firewall, "TOOLS", ())  # the host's rules: see test_firewall
    huge = tmp_path / "nr_hugepages"
    huge.write_text("0\n")
    reg = tmp_path / "reg"
    a = sysprep.Prepared(Registry(reg), tmp_path)
    a.setup()
    assert huge.read_text() == "20"
    # A second live session (another process) joins, then we leave: nothing is undone.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from zdtmpy import marker

        start = marker.start_time(other.pid)
        (reg / f"session-{other.pid}-{start}").write_text("")
        assert a.undo() == []
        assert huge.read_text() == "20"
    finally:
        other.kill()
        other.wait()
    # The other session died without leaving: the next one out restores the original.
    b = sysprep.Prepared(Registry(reg), tmp_path)
    b.setup()
    assert huge.read_text() == "20"
    assert b.undo() == ["sysctl vm.nr_hugepages: 20 -> 0 (restored)"]
    assert huge.read_text() == "0"
    assert not (reg / "original.json").exists()



root_only = pytest.mark.skipif(os.geteuid() != 0, reason="named cgroup v1 hierarchies need root")
OTHERS_WAIT = 60.0  # for the other sessions on the machine to end, before skipping


@pytest.fixture
def machine_to_ourselves():
    """A named cgroup v1 hierarchy is machine-wide: every process is in it while it exists,
    and a criu dump anywhere that read /proc/PID/cgroup then fails to mount it if it is gone
    meanwhile ('Unable to create the cgroup (name=...)'). So these tests make and remove one
    as a corpus session's first-in/last-out step does: only while no other zdtmpy session
    on the machine is live, holding the machine's session registry lock throughout, so that
    none starts meanwhile (a session joins the registry before its first dump). Waits for
    the others to end (an xdist neighbour's short inner sessions), then skips naming them."""
    reg = Registry()   # the machine's, not a stand-in
    deadline = time.monotonic() + OTHERS_WAIT
    while True:
        with reg.locked():
            others = reg.others()
            if not others:
                yield
                return
        if time.monotonic() > deadline:
            pytest.skip(f"other zdtmpy sessions are live on this machine ({reg.root}: "
                        f"{', '.join(others)}): a named cgroup hierarchy made and removed "
                        "now could fail their criu dumps")
        time.sleep(0.1)


def _children(name: str) -> set[str] | None:
    mounted, kids = cgholder.with_mount(
        name, lambda root: {p.name for p in root.iterdir() if p.is_dir()})
    return kids if mounted else None


def _criu_like_mount(name: str) -> bool:
    """What criu --manage-cgroups does while dumping: mount by name only (which cannot create
    a hierarchy), then unmount."""
    d = tempfile.mkdtemp()
    try:
        r = subprocess.run(["mount", "-t", "cgroup", "-o", f"name={name}", "x", d],
                           capture_output=True, timeout=30)
        if r.returncode == 0:
            subprocess.run(["umount", d], check=True, timeout=30)
        return r.returncode == 0
    finally:
        os.rmdir(d)


def _session(tmp_path, monkeypatch, name: str) -> sysprep.Prepared:
    monkeypatch.setattr(sysprep, "HIERARCHIES", (name,))
    monkeypatch.setattr(sysprep.firewall, "TOOLS", ())
    (tmp_path / "nr_hugepages").write_text("20\n")
    return sysprep.Prepared(Registry(tmp_path / "reg"), tmp_path)


@root_only
def test_a_hierarchy_found_there_gets_our_holder_too(tmp_path, monkeypatch,
                                                     machine_to_ourselves):
    """Another runner's hierarchy (with its own child, as zdtm.py's holder) still gets ours;
    the last session out removes only ours."""
    name = f"zdtmpy-test-{os.getpid()}"
    assert cgholder.with_mount(name, lambda root: (root / "theirs").mkdir())[0]
    try:
        p = _session(tmp_path, monkeypatch, name)
        p.setup()
        assert _children(name) == {"theirs", cgholder.HOLDER}
        assert p.undo() == [f"cgroup hierarchy name={name}: holder removed"]
        assert _children(name) == {"theirs"}
    finally:
        cgholder.with_mount(name, lambda root: (root / "theirs").rmdir())
        cgholder._retire(name)
    assert not cgholder.listed(name)


@root_only
def test_a_hierarchy_we_made_outlives_criu_mounts_and_goes_with_the_last_session(
        tmp_path, monkeypatch, machine_to_ourselves):
    name = f"zdtmpy-test-new-{os.getpid()}"
    p = _session(tmp_path, monkeypatch, name)
    p.setup()
    try:
        for _ in range(2):
            assert _criu_like_mount(name)
        assert cgholder.listed(name)
    finally:
        lines = p.undo()
    assert lines == [f"cgroup hierarchy name={name}: holder removed (hierarchy gone)"]
    assert not cgholder.listed(name)
    assert not _criu_like_mount(name)


def _join_and_exit(name: str, cgroup: str) -> None:
    """What upstream's cgroupns does: a process moves itself into `cgroup` of hierarchy
    `name` (made if missing) and ends there, its own rmdir failing while it is inside."""
    def run(root):
        (root / cgroup).mkdir(exist_ok=True)
        script = (f"import os; open({str(root / cgroup / 'cgroup.procs')!r}, 'w')"
                  f".write(str(os.getpid())); os.rmdir({str(root / cgroup)!r})")
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=30)
        assert "Device or resource busy" in r.stderr
    assert cgholder.with_mount(name, run)[0]


@root_only
def test_an_empty_cgroup_an_upstream_test_left_goes_with_the_last_session(
        tmp_path, monkeypatch, machine_to_ourselves):
    """cgroupns leaves zdtmtst/test; the hierarchy we made goes anyway."""
    name = f"zdtmpy-test-left-{os.getpid()}"
    p = _session(tmp_path, monkeypatch, name)
    p.setup()
    try:
        _join_and_exit(name, "test")
        _join_and_exit(name, "test/sub")
        assert _children(name) == {"test", cgholder.HOLDER}
    finally:
        lines = p.undo()
    assert lines == [f"cgroup hierarchy name={name}: holder removed, and 2 empty cgroup(s) "
                     "upstream's tests left (test/sub, test) (hierarchy gone)"]
    assert not cgholder.listed(name)


@root_only
def test_cgroups_found_there_another_runners_holder_and_busy_ones_stay(
        tmp_path, monkeypatch, machine_to_ourselves):
    name = f"zdtmpy-test-kept-{os.getpid()}"
    assert cgholder.with_mount(name, lambda root: (root / "theirs" / "sub").mkdir(
        parents=True))[0]
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        p = _session(tmp_path, monkeypatch, name)
        p.setup()

        def later(root):   # while the session runs: another runner, a test still running
            (root / "holder.1234").mkdir()
            (root / "busy").mkdir()
            (root / "busy" / "cgroup.procs").write_text(str(busy.pid))
        assert cgholder.with_mount(name, later)[0]
        _join_and_exit(name, "test")
        assert p.undo() == [f"cgroup hierarchy name={name}: holder removed, and 1 empty "
                            "cgroup(s) upstream's tests left (test)"]
        assert _children(name) == {"theirs", "holder.1234", "busy"}
    finally:
        busy.kill()
        busy.wait()

        def clean(root):
            for d in ("theirs/sub", "theirs", "holder.1234", "busy", "test"):
                with contextlib.suppress(FileNotFoundError):
                    (root / d).rmdir()
        cgholder.with_mount(name, clean)
        cgholder._retire(name)
    assert not cgholder.listed(name)


def test_last_session_out_removes_empty_tmp_dirs_upstream_left(tmp_path, monkeypatch,
                                                               stand_in_tmp):
    """What mnt_ext_auto / mnt_ext_multiple leave in /tmp (a stand-in here): only the new,
    empty, upstream-named directories go; what was there first, what holds anything, files,
    symlinks and zdtmpy's own stay."""
    tmp = stand_in_tmp
    monkeypatch.setattr(sysprep, "HIERARCHIES", ())
    monkeypatch.setattr(sysprep.firewall, "TOOLS", ())
    (tmp_path / "nr_hugepages").write_text("20\n")
    (tmp / "zdtm_found_first").mkdir()
    p = sysprep.Prepared(Registry(tmp_path / "reg"), tmp_path)
    p.setup()
    for name in ("zdtm_ext_auto.XXXXXX", "zdtm_ext_multiple.tmp", "zdtm_full", "zdtmpy-ns-1"):
        (tmp / name).mkdir()
    (tmp / "zdtm_full" / "x").write_text("kept")
    (tmp / "zdtm_file").write_text("")
    (tmp / "zdtm_link").symlink_to(tmp / "zdtm_ext_auto.XXXXXX")
    assert p.undo() == ["2 empty dir(s) upstream's tests left in " + str(tmp) + " removed "
                        "(zdtm_ext_auto.XXXXXX, zdtm_ext_multiple.tmp)"]
    assert sorted(os.listdir(tmp)) == ["zdtm_file", "zdtm_found_first", "zdtm_full",
                                       "zdtm_link", "zdtmpy-ns-1"]


def test_tmp_dirs_are_kept_without_a_record_of_what_was_there(tmp_path):
    """An older zdtmpy's record (no tmp_found) or a record of the wrong shape: remove none."""
    (tmp_path / "zdtm_x").mkdir()
    assert tmpleft.remove_new(tmpleft.record(None), tmp_path) == []
    assert tmpleft.remove_new(tmpleft.record(["a", 3]), tmp_path) == []
    assert tmpleft.remove_new(tmpleft.record("zdtm_y"), tmp_path) == []
    assert (tmp_path / "zdtm_x").is_dir()
    assert tmpleft.remove_new(tmpleft.record([]), tmp_path) != []
    assert not (tmp_path / "zdtm_x").exists()
