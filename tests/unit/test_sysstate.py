"""System state saved at session start and put back at its end (on a stand-in /proc/sys)."""

from __future__ import annotations

from zdtmpy import sysstate


def test_changed_sysctls_are_restored_and_reported(tmp_path):
    (tmp_path / "fs").mkdir()
    (tmp_path / "vm").mkdir()
    pipe, huge = tmp_path / "fs" / "pipe-max-size", tmp_path / "vm" / "nr_hugepages"
    pipe.write_text("1048576\n")
    huge.write_text("0\n")
    snap = sysstate.Snapshot.take(tmp_path, ("fs/pipe-max-size", "vm/nr_hugepages",
                                             "no/such"))
    assert snap.sysctls == {"fs/pipe-max-size": "1048576", "vm/nr_hugepages": "0"}
    pipe.write_text("4194304\n")  # what the remote-lazy cycle does
    done = snap.restore()
    assert pipe.read_text() == "1048576"
    assert huge.read_text() == "0\n"  # unchanged: not written
    assert any("fs.pipe-max-size: 4194304 -> 1048576" in line for line in done)
    assert not any("nr_hugepages" in line for line in done)


def test_unrestorable_sysctl_is_reported(tmp_path):
    (tmp_path / "vm").mkdir()
    huge = tmp_path / "vm" / "nr_hugepages"
    huge.write_text("0")
    snap = sysstate.Snapshot.take(tmp_path, ("vm/nr_hugepages",))
    huge.write_text("20")
    huge.chmod(0o444)
    (tmp_path / "vm").chmod(0o555)
    try:
        import os

        if os.access(huge, os.W_OK):  # root ignores modes: nothing to check here
            return
        done = snap.restore()
        assert any("could not restore" in line for line in done)
    finally:
        (tmp_path / "vm").chmod(0o755)
