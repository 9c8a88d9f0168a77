"""System state saved at session start and put back at its end (on a stand-in /proc/sys)."""

from __future__ import annotations

import os

from zdtmpy import sysstate

OURS = {"fs/pipe-max-size": "4194304", "vm/nr_hugepages": "20", "no/such": "1"}


def _proc_sys(tmp_path, pipe="1048576", huge="0"):
    (tmp_path / "fs").mkdir()
    (tmp_path / "vm").mkdir()
    (tmp_path / "fs" / "pipe-max-size").write_text(pipe + "\n")
    (tmp_path / "vm" / "nr_hugepages").write_text(huge + "\n")
    return tmp_path / "fs" / "pipe-max-size", tmp_path / "vm" / "nr_hugepages"


def test_what_zdtmpy_raised_is_restored_and_reported(tmp_path):
    pipe, huge = _proc_sys(tmp_path)
    snap = sysstate.Snapshot.take(tmp_path, OURS)
    assert snap.sysctls == {"fs/pipe-max-size": "1048576", "vm/nr_hugepages": "0"}
    pipe.write_text("4194304\n")  # what the remote-lazy cycle does
    done = snap.restore()
    assert pipe.read_text() == "1048576"
    assert huge.read_text() == "0\n"  # unchanged: not written
    assert any("fs.pipe-max-size: 4194304 -> 1048576" in line for line in done)
    assert not any("nr_hugepages" in line for line in done)


def test_a_value_someone_else_set_is_left_alone(tmp_path):
    # Another session raised hugepages before ours started, then put it back meanwhile.
    _pipe, huge = _proc_sys(tmp_path, huge="20")
    snap = sysstate.Snapshot.take(tmp_path, OURS)
    huge.write_text("0\n")
    assert snap.restore() == []
    assert huge.read_text() == "0\n"
    huge.write_text("7\n")  # not a value zdtmpy sets
    assert snap.restore() == []


def test_unrestorable_sysctl_is_reported(tmp_path):
    _pipe, huge = _proc_sys(tmp_path)
    snap = sysstate.Snapshot.take(tmp_path, OURS)
    huge.write_text("20")
    huge.chmod(0o444)
    (tmp_path / "vm").chmod(0o555)
    try:
        if os.access(huge, os.W_OK):  # root ignores modes: nothing to check here
            return
        assert any("could not restore" in line for line in snap.restore())
    finally:
        (tmp_path / "vm").chmod(0o755)


def _other_session(root):
    """A live process registered as another session; kill it to end that session."""
    import subprocess
    import sys

    from zdtmpy import marker

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    root.mkdir(exist_ok=True)
    (root / f"session-{other.pid}-{marker.start_time(other.pid)}").write_text("")
    return other


def test_two_sessions_the_last_out_restores_what_the_first_found(tmp_path):
    from zdtmpy.corpus.sysprep import put_back
    from zdtmpy.registry import Registry

    proc_sys = tmp_path / "sys"
    proc_sys.mkdir()
    pipe, _ = _proc_sys(proc_sys)
    reg = Registry(tmp_path / "reg")
    with reg.locked():
        reg.join()
    # This session's lazy item raises it, recording what it found.
    sysstate.remember("fs/pipe-max-size", "1048576", reg)
    pipe.write_text("4194304\n")
    # Another session starts meanwhile and raises it too (already raised: records nothing
    # new; a later value never replaces the first one found).
    other = _other_session(reg.root)
    try:
        sysstate.remember("fs/pipe-max-size", "4194304", reg)
        with reg.locked() as shared:      # we leave first: the other still needs it
            reg.leave()
            assert not shared.alone
        assert pipe.read_text() == "4194304\n"
    finally:
        other.kill()
        other.wait()
    last = Registry(tmp_path / "reg")     # the last one out (the other died)
    with last.locked() as shared:
        assert shared.alone
        done = sysstate.put_back_sysctls(shared.state, proc_sys)
    assert pipe.read_text() == "1048576"
    assert done == ["sysctl fs.pipe-max-size: 4194304 -> 1048576 (restored)"]
    assert not (reg.root / "original.json").exists()
    assert put_back({}) == []


def test_a_value_someone_else_set_meanwhile_is_left(tmp_path):
    from zdtmpy.registry import Registry

    pipe, _ = _proc_sys(tmp_path)
    reg = Registry(tmp_path / "reg")
    sysstate.remember("fs/pipe-max-size", "1048576", reg)
    pipe.write_text("8388608\n")   # not zdtmpy's value: an admin's
    with reg.locked() as shared:
        assert sysstate.put_back_sysctls(shared.state, tmp_path) == []
    assert pipe.read_text() == "8388608\n"


def test_a_damaged_registry_record_counts_as_none(tmp_path):
    from zdtmpy.registry import Registry

    reg = Registry(tmp_path / "reg")
    reg.root.mkdir()
    (reg.root / "original.json").write_text("[1, 2")
    with reg.locked() as shared:
        assert shared.state == {}
    (reg.root / "original.json").write_text("[1, 2]")
    with reg.locked() as shared:
        assert shared.state == {}


def test_ensure_sets_zdtmpys_value_once_and_the_last_out_puts_the_first_found_back(tmp_path):
    from zdtmpy.registry import Registry

    (tmp_path / "vm").mkdir()
    uffd = tmp_path / "vm" / "unprivileged_userfaultfd"
    uffd.write_text("0\n")
    reg = Registry(tmp_path / "reg")
    assert sysstate.ensure("vm/unprivileged_userfaultfd", tmp_path, reg) == "0"
    assert uffd.read_text() == "1"
    assert sysstate.ensure("vm/unprivileged_userfaultfd", tmp_path, reg) is None  # already
    with reg.locked() as shared:
        done = sysstate.put_back_sysctls(shared.state, tmp_path)
    assert done == ["sysctl vm.unprivileged_userfaultfd: 1 -> 0 (restored)"]
    assert uffd.read_text() == "0"


def test_ensure_on_a_value_already_allowed_records_and_changes_nothing(tmp_path):
    from zdtmpy.registry import Registry

    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "unprivileged_userfaultfd").write_text("1\n")
    reg = Registry(tmp_path / "reg")
    assert sysstate.ensure("vm/unprivileged_userfaultfd", tmp_path, reg) is None
    assert not (reg.root / "original.json").exists()
