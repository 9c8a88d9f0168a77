"""The JSON report: records from properties, hostile files, merging shards, compare."""

import json

import pytest

from zdtmpy.cli import main
from zdtmpy.reporting import records, summary


def item(rid, outcome="passed", mode="plain", comp="off", **extra):
    props = [("zdtm_mode", mode), ("zdtm_compression", comp), ("zdtm_stage_dump_s", 0.1),
             ("zdtm_stage_restore_s", 0.1), ("other", 1)]
    props += [(f"zdtm_{k}", v) for k, v in extra.items()]
    return records.item_record(rid, outcome, 1.0, props)


def write(path, items, shard=None):
    rep = records.Report(sessions=[{"shard": shard, "kernel": "6.18", "criu":
                                    {"bin": "/c", "version": "4.1.1"}}],
                         items={i["id"]: i for i in items})
    records.write(path, rep)
    return path


def test_record_from_properties():
    rec = item("t[plain-off]", failed_stage="restore", image_bytes_before=8192)
    assert rec["stages"] == {"dump": 0.1, "restore": 0.1}
    assert rec["mode"] == "plain" and rec["failed_stage"] == "restore"
    assert "timings" not in rec and "other" not in rec


def test_two_shards_merge_and_say_complete(tmp_path):
    a = write(tmp_path / "a.json", [item("t1"), item("t2", "failed")], "1/2")
    b = write(tmp_path / "b.json", [item("t3", "skipped", comp="page")], "2/2")
    rep = records.load_all([a, b])
    assert sorted(rep.items) == ["t1", "t2", "t3"]
    assert rep.completeness() == "complete: 2/2 shards, 3 items"
    assert records.load_all([a]).completeness() == "INCOMPLETE: shard(s) 2/2 missing"
    lines = summary.table(rep)
    assert lines[1].split() == ["plain", "off", "1", "1", "0"]
    assert lines[2].split() == ["plain", "page", "0", "0", "1"]
    assert lines[-1].split() == ["total", "1", "1", "1"]


def test_overlapping_shards_are_refused(tmp_path):
    a = write(tmp_path / "a.json", [item("t1")], "1/2")
    with pytest.raises(records.ReportError, match="both hold item t1"):
        records.load_all([a, a])


@pytest.mark.parametrize("content, problem", [
    (b"\x00\xff not json", "not JSON"),
    (b"[1, 2]", "not a zdtmpy report"),
    (b'{"format": "zdtmpy-report", "version": 99}', "report version 99"),
    (b'{"format": "zdtmpy-report", "version": 1, "sessions": {}, "items": []}',
     "'sessions' must be a list"),
    (b'{"format": "zdtmpy-report", "version": 1, "sessions": [], "items": [{"id": "x", '
     b'"outcome": "exploded"}]}', "item 0 (x): 'outcome' is 'exploded'"),
    (b'{"format": "zdtmpy-report", "version": 1, "sessions": [], "items": [{"id": "x", '
     b'"outcome": "passed", "duration": NaN}]}', "'duration' must be a finite number"),
    (b'{"format": "zdtmpy-report", "version": 1, "sessions": [], "items": [{"id": "x", '
     b'"outcome": "passed", "stages": {"dump": -1}}]}', "stage 'dump' has duration -1"),
    (b'{"format": "zdtmpy-report", "version": 1, "sessions": [{"shard": "9/2"}], '
     b'"items": []}', "shard '9/2' is not K/N"),
    (b"[" * 100000, "not JSON"),
])
def test_hostile_report_files_get_a_clear_message(tmp_path, content, problem):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    with pytest.raises(records.ReportError) as exc:
        records.load(path)
    assert str(path) in str(exc.value) and problem in str(exc.value)


def test_oversized_report_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "MAX_BYTES", 1000)
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"format": "zdtmpy-report", "pad": "x" * 2000}))
    with pytest.raises(records.ReportError, match="larger than"):
        records.load(path)


def test_compare_names_outcome_changes_and_slower_stages(tmp_path, capsys):
    base = write(tmp_path / "base.json", [item("t1"), item("t2"), item("gone")])
    slow = item("t2")
    slow["stages"]["restore"] = 0.9
    new = write(tmp_path / "new.json", [item("t1", "failed", failed_stage="restore"), slow,
                                        item("added")])
    assert main(["report", str(new), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "t1: passed -> failed (failed at stage restore)" in out
    assert "t2: restore 0.100s -> 0.900s (x9.00)" in out
    assert "only in the baseline: 1\n  gone" in out
    assert "only in this run: 1\n  added" in out
    assert "1 test(s) passed in the baseline and fail now" in out
    # no regression: exit 0, and a stage within the threshold is not named
    assert main(["report", str(base), "--baseline", str(base)]) == 0
    assert "outcome changes (baseline -> this run): 0" in capsys.readouterr().out


def test_report_command_names_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad)]) == 1
    assert f"{bad}: not a zdtmpy report" in capsys.readouterr().err


def test_a_fifo_or_a_directory_is_refused_without_hanging(tmp_path):
    import os

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(records.ReportError, match="fifo.json: not a regular file"):
        records.load(fifo)
    with pytest.raises(records.ReportError, match="not a regular file"):
        records.load(tmp_path)


def test_report_path_that_cannot_be_written_is_a_usage_error(pytester):
    (pytester.path / "descs").mkdir()
    for bad, why in ((pytester.path, "is a directory"),
                     (pytester.path / "no" / "r.json", "does not exist")):
        res = pytester.runpytest_subprocess("--co", f"--zdtm-report={bad}", "descs")
        assert res.ret == pytest.ExitCode.USAGE_ERROR
        assert why in res.stderr.str()


def test_report_piped_into_head_stops_without_a_traceback(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path / "r.json", [item(f"t{i}", comp=f"c{i}") for i in range(3000)])
    cmd = f"{sys.executable} -m zdtmpy report {path} | head -n 2"
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert len(res.stdout.splitlines()) == 2
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr
