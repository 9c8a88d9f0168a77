"""bench corpus, per test: where zdtm.py's TAP report and zdtmpy's junit disagree."""

from __future__ import annotations

from zdtmpy.bench import JunitCase
from zdtmpy.bench.corpus_parity import differences, junit_results, tap_results

TAP = """TAP version 13
# Timestamp: 2026-12-01 02:21
1..5
ok 1 - zdtm/static/pipe00
not ok 2 - zdtm/static/bridge # flavor ns
ok 3 - zdtm/static/apparmor # SKIP checkskip failed
ok 4 - zdtm/static/maps00
ok 5 - zdtm/static/cgroupns
"""


def _case(test, outcome, message=""):
    return JunitCase("criu-4.1.1[ns]", f"{test}[plain-off]", 0.1, outcome, message,
                     {"zdtm_test": test})


def test_tap_lines_give_each_test_its_outcome(tmp_path):
    (tmp_path / "zdtm.tap").write_text(TAP)
    (tmp_path / "notes.txt").write_text("ok 9 - zdtm/static/not-a-tap-file\n")
    assert tap_results(tmp_path) == {"zdtm/static/pipe00": "passed",
                                     "zdtm/static/bridge": "failed",
                                     "zdtm/static/apparmor": "skipped",
                                     "zdtm/static/maps00": "passed",
                                     "zdtm/static/cgroupns": "passed"}


def test_differences_list_each_side_with_zdtmpy_cause(tmp_path):
    (tmp_path / "zdtm.tap").write_text(TAP)
    ours = junit_results([
        _case("zdtm/static/pipe00", "passed"),
        _case("zdtm/static/bridge", "passed"),
        _case("zdtm/static/maps00", "failed", "stage 'visible-state': differs\nlong details"),
        _case("zdtm/static/apparmor", "skipped", "checkskip"),
        JunitCase("descs", "pages00[plain-off]", 0.1, "failed"),  # not an upstream test
    ])
    assert differences(tap_results(tmp_path), ours) == [
        "zdtm.py passed, zdtmpy not: 2",
        "  zdtm/static/cgroupns: not run",
        "  zdtm/static/maps00: failed: stage 'visible-state': differs",
        "zdtmpy passed, zdtm.py not: 1\n  zdtm/static/bridge: failed",
    ]
    same = junit_results([_case("zdtm/static/pipe00", "passed")])
    assert differences({"zdtm/static/pipe00": "passed"}, same) == [
        "zdtm.py passed, zdtmpy not: 0", "zdtmpy passed, zdtm.py not: 0"]
