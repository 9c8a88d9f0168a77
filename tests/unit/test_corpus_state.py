"""Upstream's visible-state rules for its own tests."""

from __future__ import annotations

import warnings

import pytest

from zdtmpy.corpus.state import UncheckedDifference, differences, split
from zdtmpy.procstate import ProcState


def _st(maps, fds):
    return {7: ProcState(7, tuple(maps), tuple(fds))}


def test_deleted_file_restored_under_a_link_name_is_the_same_state():
    before = _st([(0x1000, 0x3000, "rw-p", 0, "/w/x.test (deleted)")],
                 [(0, "/dev/null"), (4, "/w/x.test (deleted)")])
    after = _st([(0x1000, 0x3000, "rw-p", 0, "/w/x.test.cr_link (deleted)")],
                [(0, "/dev/null"), (4, "/w/x.test.cr_link (deleted)")])
    assert differences(before, after) == []


def test_split_mappings_merge_but_lost_fds_and_protections_show():
    before = _st([(0x1000, 0x2000, "rw-p", 0, ""), (0x2000, 0x3000, "rw-p", 0, "")],
                 [(0, "a"), (3, "b")])
    assert differences(before, _st([(0x1000, 0x3000, "rw-p", 0, "")], [(0, "a"), (3, "c")])) \
        == []
    diffs = differences(before, _st([(0x1000, 0x3000, "r--p", 0, "")], [(0, "a")]))
    assert "pid 7: mapping 1000-3000 rw-p lost" in diffs
    assert "pid 7: mapping 1000-3000 r--p appeared" in diffs
    assert "pid 7: fds [3] lost, [] appeared" in diffs
    assert differences(before, {}) == ["pid 7: missing after restore"]


def test_same_protection_merges_across_file_and_anonymous_as_upstream():
    """zdtm.py merges adjacent maps by protection alone, the run keeping its first kind."""
    before = _st([(0x1000, 0x2000, "rw-p", 0, "/lib/x.so"), (0x2000, 0x3000, "rw-p", 0, "")], [])
    after = _st([(0x1000, 0x2000, "rw-p", 0, "/lib/x.so"),
                 (0x2000, 0x3000, "rw-p", 0, "/w/y.test")], [])
    assert differences(before, after) == []
    anon_first = _st([(0x1000, 0x3000, "rw-p", 0, "")], [])
    assert differences(before, anon_first) == ["pid 7: mapping 1000-3000 rw-p lost",
                                               "pid 7: mapping 1000-3000 rw-p appeared"]


def test_compared_where_upstream_compares():
    from zdtmpy.corpus.state import comparable

    assert comparable("static", "ns") and comparable("static", "uns")
    assert not comparable("static", "h")  # zdtm.py's get_visible_state: flavor h, nothing
    assert not comparable("transition", "ns")


def _tree(**maps_by_pid):
    return {int(p[1:]): ProcState(int(p[1:]), tuple(m), ((0, "a"),))
            for p, m in maps_by_pid.items()}


STACK = (0x7000, 0x8000, "rw-p", 0, "")
GUARD = (0x6000, 0x7000, "---p", 0, "")


def test_split_fails_on_the_init_only_as_zdtm_py_compares():
    """zdtm.py compares the lowest pid (ns.c's init): a new thread stack in the test's own
    process (pthread_timers) is reported apart, a change in the init is a failure."""
    before = _tree(p1=[STACK], p5=[STACK])
    checked, unchecked = split(before, _tree(p1=[STACK], p5=[GUARD, STACK]))
    assert checked == []
    assert unchecked == ["pid 5: mapping 6000-7000 ---p appeared"]
    checked, unchecked = split(before, _tree(p1=[GUARD, STACK], p5=[STACK]))
    assert checked == ["pid 1: mapping 6000-7000 ---p appeared"] and unchecked == []
    assert split(before, _tree(p5=[STACK]))[0] == ["pid 1: missing after restore"]
    assert split(before, _tree(p1=[STACK]))[1] == ["pid 5: missing after restore"]
    assert split({}, {}) == ([], [])


def test_unchecked_differences_warn_and_do_not_fail(tmp_path):
    from zdtmpy.corpus.protocol import UpstreamWorkload
    from zdtmpy.corpus.suite import UpstreamTest

    test = UpstreamTest("zdtm/static/fake00", "static", "fake00", ())
    wl = UpstreamWorkload(test, tmp_path / "fake00", tmp_path / "work", {}, flavor="ns")
    before = _tree(p1=[STACK], p6=[STACK])
    after = {1: before[1], 6: ProcState(6, (STACK,), ())}  # the child's fd 0 went away
    with pytest.warns(UncheckedDifference, match=r"fake00: .*\n  pid 6: fds \[0\] lost"):
        assert wl.state_differences(before, after) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: no warning
        assert wl.state_differences(before, before) == []


def _with_mounts(mounts):
    from zdtmpy.procstate import ProcState

    return {1: ProcState(1, (), (), tuple(mounts))}


def test_mount_tables_are_compared_as_multisets_without_ids():
    proc = ("/", "/proc", "rw,nosuid", False, False)
    tmp = ("/", "/tmp", "rw", True, False)
    same = differences(_with_mounts([proc, tmp]), _with_mounts([tmp, proc]))
    assert same == []
    lost = differences(_with_mounts([proc, tmp, tmp]), _with_mounts([proc, tmp]))
    assert lost == ["pid 1: mount /tmp (root /, rw shared) lost"]
    changed = differences(_with_mounts([proc]), _with_mounts([("/", "/proc", "ro", False,
                                                                 False)]))
    assert changed == ["pid 1: mount /proc (root /, rw,nosuid) lost",
                       "pid 1: mount /proc (root /, ro) appeared"]


def test_mountinfo_is_read_as_zdtm_py_reads_it(tmp_path, monkeypatch):
    """Ids dropped; a propagation flag counts only as the first optional field."""
    from zdtmpy import procstate

    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "30 22 0:5 / /proc rw,nosuid master:3 - proc proc rw\n"
        "31 22 0:6 /sub /mnt rw shared:4 master:5 - tmpfs t rw\n"
        "32 22 0:7 / /dev rw - devtmpfs d rw\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        info if p == "/proc/7/mountinfo" else p, *a, **k))
    assert procstate._mounts(7) == tuple(sorted([
        ("/", "/", "rw,relatime", True, False),
        ("/", "/proc", "rw,nosuid", False, True),
        ("/sub", "/mnt", "rw", True, False),
        ("/", "/dev", "rw", False, False)]))


def test_link_remap_files_left_after_a_restore_are_named_only_for_link_remap_tests(tmp_path):
    from zdtmpy.corpus.protocol import UpstreamWorkload
    from zdtmpy.corpus.suite import UpstreamTest

    test = UpstreamTest("zdtm/static/fake00", "static", "fake00", ())
    work = tmp_path / "work"
    work.mkdir()
    (work / "link_remap.3").write_text("")
    (work / "fake00.out").write_text("")
    remap = UpstreamWorkload(test, tmp_path / "fake00", work, {}, flavor="h", link_remap=True)
    assert remap.restore_leftovers() == [str(work / "link_remap.3")]
    plain = UpstreamWorkload(test, tmp_path / "fake00", work, {}, flavor="h")
    assert plain.restore_leftovers() == []
    (work / "link_remap.3").unlink()
    assert remap.restore_leftovers() == []
