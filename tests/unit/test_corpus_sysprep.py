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

