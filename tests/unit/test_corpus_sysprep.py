"""Machine-wide corpus setup shared by sessions: first in sets up, last out undoes."""

from __future__ import annotations

import subprocess
import sys

from zdtmpy.corpus import sysprep
from zdtmpy.registry import Registry


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


def _live_stand_in(reg):
    """Register a live process as another session; returns it (kill it to end that)."""
    from zdtmpy import marker

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    (reg / f"session-{other.pid}-{marker.start_time(other.pid)}").write_text("")
    return other


def test_userfaultfd_only_for_a_session_that_asks_and_back_when_the_last_leaves(
        tmp_path, monkeypatch):
    monkeypatch.setattr(sysprep, "HIERARCHIES", ())
    monkeypatch.setattr(sysprep.firewall, "TOOLS", ())
    (tmp_path / "nr_hugepages").write_text("0\n")
    uffd = tmp_path / "unprivileged_userfaultfd"
    uffd.write_text("0\n")
    reg = tmp_path / "reg"
    plain = sysprep.Prepared(Registry(reg), tmp_path)
    plain.setup()
    assert uffd.read_text() == "0\n"  # not asked for: untouched
    other = _live_stand_in(reg)       # a session still running keeps the setup alive
    try:
        assert plain.undo() == []
        lazy_uns = sysprep.Prepared(Registry(reg), tmp_path, userfaultfd=True)
        lazy_uns.setup()                  # not the first session: raises it all the same
        assert uffd.read_text() == "1"
        assert lazy_uns.undo() == []      # the other session is alive: nothing undone
        assert uffd.read_text() == "1"
    finally:
        other.kill()
        other.wait()
    last = sysprep.Prepared(Registry(reg), tmp_path)
    last.setup()
    assert sorted(last.undo()) == ["sysctl vm.nr_hugepages: 20 -> 0 (restored)",
                                   "sysctl vm.unprivileged_userfaultfd: 1 -> 0 (restored)"]
    assert uffd.read_text() == "0"


def test_userfaultfd_already_allowed_is_left_as_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sysprep, "HIERARCHIES", ())
    monkeypatch.setattr(sysprep.firewall, "TOOLS", ())
    (tmp_path / "nr_hugepages").write_text("20\n")
    uffd = tmp_path / "unprivileged_userfaultfd"
    uffd.write_text("1\n")
    p = sysprep.Prepared(Registry(tmp_path / "reg"), tmp_path, userfaultfd=True)
    p.setup()
    assert p.undo() == []
    assert uffd.read_text() == "1\n"
