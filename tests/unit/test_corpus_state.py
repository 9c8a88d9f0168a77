"""Upstream's visible-state rules for its own tests."""

from __future__ import annotations

from zdtmpy.corpus.state import differences
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
