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
