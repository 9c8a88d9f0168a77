"""The per-test mount namespace and the end-of-session sweep of upstream's mounts: real
namespaces and real tmpfs mounts (root only)."""

from __future__ import annotations

import os
import subprocess

import pytest

from zdtmpy.corpus import leftmounts, mntns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


def _points() -> list[str]:
    return [m.point for m in leftmounts.table()]


def test_mounts_made_inside_stay_inside(tmp_path):
    home, cwd = mntns.current(), os.getcwd()
    target = tmp_path / "t"
    target.mkdir()
    with mntns.private_mountns() as inner:
        assert inner != home
        subprocess.run(["mount", "-t", "tmpfs", "zdtm_unit", str(target)], check=True)
        assert str(target) in _points()  # a child of this thread sees it...
    assert str(target) not in _points()  # ...the runner's namespace never did
    assert mntns.current() == home and os.getcwd() == cwd


def test_session_end_removes_only_upstream_mounts_that_appeared(tmp_path):
    old, new, other = (tmp_path / n for n in ("old", "new", "other"))
    for d in (old, new, other):
        d.mkdir()
    with mntns.private_mountns():  # not the host's table: a namespace of the test's own
        subprocess.run(["mount", "-t", "tmpfs", "zdtm_before", str(old)], check=True)
        before = {m.mount_id for m in leftmounts.table()}
        subprocess.run(["mount", "-t", "tmpfs", "zdtm_left", str(new)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "someone_else", str(other)], check=True)
        lines = leftmounts.remove_new(before)
        assert lines == [f"mount zdtm_left on {new} left by a test: unmounted"]
        points = _points()
        assert str(new) not in points
        assert str(old) in points and str(other) in points


def test_binfmt_misc_held_in_the_tests_namespace_only():
    host_has_it = os.path.ismount(mntns.BINFMT_MISC)
    with mntns.private_mountns():
        if not mntns.hold_binfmt_misc():
            pytest.skip("no binfmt_misc in this kernel")
        assert mntns.BINFMT_MISC in _points()
    assert (mntns.BINFMT_MISC in _points()) == host_has_it
