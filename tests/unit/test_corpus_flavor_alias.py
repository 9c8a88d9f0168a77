"""flavor h's short aliases: a run killed before its cleanup leaves them; the next one sweeps."""

from __future__ import annotations

import os
import subprocess
import sys

from zdtmpy.corpus.flavor import sweep_dead_aliases


def test_aliases_of_dead_workers_go_live_ones_and_other_files_stay(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "work"
    target.mkdir()
    stale = tmp_path / f"zdtmpy-h-{dead.pid}-3"
    stale.symlink_to(target)
    live = tmp_path / f"zdtmpy-h-{os.getpid()}-0"
    live.symlink_to(target)
    not_a_link = tmp_path / f"zdtmpy-h-{dead.pid}-4"
    not_a_link.mkdir()
    odd = tmp_path / "zdtmpy-h-x-1"
    odd.symlink_to(target)
    assert sweep_dead_aliases(tmp_path) == [stale]
    assert not stale.is_symlink()
    assert live.is_symlink() and not_a_link.is_dir() and odd.is_symlink()
    assert target.is_dir()  # the link went, never what it points to
