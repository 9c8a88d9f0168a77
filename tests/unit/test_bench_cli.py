"""`zdtmpy bench`: the CLI wiring and the parsing of its inputs (never timings)."""

import pytest

from zdtmpy.bench import BenchError, parse_junit
from zdtmpy.bench.cycle import criu_log_seconds, item_record, make_copies, parse_upstream_line
from zdtmpy.cli import main

# A test file that records timings the way the runner does.
RECORDING_TESTS = """
def test_ok(request):
    request.node.user_properties.extend([("zdtm_stage_build_s", 0.5), ("zdtm_stage_dump_s", 0.25),
                                         ("zdtm_stage_visible-state_s", 0.125)])

def test_bad(request):
    request.node.user_properties.append(("zdtm_stage_start_s", 1.0))
    assert False, "workload says FAIL"

def test_skip():
    import pytest
    pytest.skip("criu unavailable")
"""


def test_bench_cycle_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "cycle", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--repeat", "--json", "--upstream", "--no-upstream", "--criu-bin"):
        assert opt in out


def test_bench_needs_a_kind(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench"])
    assert exc.value.code == 2


def _check_cases(cases):
    by = {c.name: c for c in cases}
    assert by["test_ok"].outcome == "passed"
    assert by["test_ok"].timings == {"build": 0.5, "dump": 0.25, "visible-state": 0.125}
    assert by["test_bad"].outcome == "failed"
    assert by["test_bad"].timings == {"start": 1.0}
    assert "workload says FAIL" in by["test_bad"].message
    assert by["test_skip"].outcome == "skipped"
    assert by["test_skip"].timings == {}


def test_parse_junit_written_by_pytest(pytester):
    pytester.makepyfile(test_rec=RECORDING_TESTS)
    xml = pytester.path / "out.xml"
    pytester.runpytest("-p", "no:zdtmpy", "-p", "no:cacheprovider", f"--junitxml={xml}")
    _check_cases(parse_junit(xml))


def test_parse_junit_through_xdist(pytester):
    # Under xdist the properties travel in the workers' serialized reports.
    pytester.makepyfile(test_rec=RECORDING_TESTS)
    xml = pytester.path / "out.xml"
    pytester.runpytest_subprocess("-p", "no:zdtmpy", "-p", "no:cacheprovider", "-n", "1",
                                  f"--junitxml={xml}")
    _check_cases(parse_junit(xml))


def test_parse_junit_bad_input(tmp_path):
    with pytest.raises(BenchError, match="cannot read"):
        parse_junit(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuites><testcase")
    with pytest.raises(BenchError, match="not a junit XML"):
        parse_junit(bad)
    odd = tmp_path / "odd.xml"
    odd.write_text('<testsuite><testcase classname="c" name="t" time="1.5"><properties>'
                   '<property name="zdtm_stage_dump_s" value="not a literal("/>'
                   "</properties></testcase></testsuite>")
    (case,) = parse_junit(odd)
    assert case.time == 1.5 and case.timings == {}


def test_item_record_groups_stages(tmp_path):
    from zdtmpy.bench import JunitCase

    stages = {"build": 0.25, "start": 0.25, "visible-state": 0.125, "dump": 0.5,
              "oracle": 0.125, "restore": 0.25, "verdict": 0.25, "odd": 0.125}
    case = JunitCase("descs", "pages00_c2[plain-off]", 2.0, "passed", properties={
        f"zdtm_stage_{k}_s": v for k, v in stages.items()})
    workdir = tmp_path / "pages00_c2-plain-off"
    workdir.mkdir()
    (workdir / "dump.log").write_text("(00.000010) start\n(00.375000) done\n")
    rec = item_record(case, {"pages00_c2": "pages00"}, tmp_path)
    assert rec["test"] == "pages00"
    assert rec["groups"]["checks"] == 0.5 and rec["groups"]["other"] == 0.125
    assert rec["groups"]["harness"] == pytest.approx(0.125)
    assert rec["criu_dump"] == 0.375 and rec["criu_restore"] is None
    # no restore log: the restore stage stands in for criu's own restore time
    assert rec["overhead"] == pytest.approx(2.0 - 0.375 - 0.25)
    assert criu_log_seconds(tmp_path / "none.log") is None


def test_make_copies(tmp_path):
    from zdtmpy import descriptor

    src = tmp_path / "src"
    src.mkdir()
    (src / "alpha.desc").write_text("{'flavor': 'h', 'flags': 'suid', 'timeout': 30}")
    (src / "beta.yaml").write_text("workload: beta_exe\nflavor: h\ncompress: [off]\n")
    names = make_copies(src, tmp_path / "descs", 3)
    assert names == {"alpha": "alpha", "alpha_c2": "alpha", "alpha_c3": "alpha",
                     "beta": "beta", "beta_c2": "beta", "beta_c3": "beta"}
    copy = descriptor.load(tmp_path / "descs" / "alpha_c3.yaml")
    assert copy.workload == "alpha" and copy.has("suid")
    assert descriptor.load(tmp_path / "descs" / "beta_c2.yaml").compress == ("off",)


def test_parse_upstream_line():
    rec = parse_upstream_line(
        "upstream test=zdtm/static/maps00 flavor=uns run=1/3 wall=1.043 result=PASS "
        "criu_dump=0.112 criu_restore=0.141  log=/tmp/x.log")
    assert rec["test"] == "zdtm/static/maps00" and rec["flavor"] == "uns"
    assert rec["wall"] == 1.043 and rec["criu_restore"] == 0.141 and rec["result"] == "PASS"
    assert parse_upstream_line("upstream-median test=x median=1.0") is None
    assert parse_upstream_line("") is None


@pytest.mark.parametrize("argv, name", [
    ([], "page"),
    (["--compress", "off"], "off"),
    (["--compress", "region"], "region256k"),                   # the old spelling
    (["--compress", "region", "--region", "64K"], "region64k"),  # the old spelling
    (["--compress", "region1m"], "region1m"),
    (["--region", "4M", "--acceleration", "3"], "region4m"),
])
def test_bench_stream_takes_the_commands_compression_options(argv, name):
    import argparse

    from zdtmpy.bench import stream
    from zdtmpy.codec.options import spec_from_args, to_argv

    parser = argparse.ArgumentParser()
    stream.add_arguments(parser)
    spec = spec_from_args(parser.parse_args(argv))
    assert spec is not None and spec.name == name
    # what the bench hands the streamer parses back to the same value
    again = argparse.ArgumentParser()
    stream.add_arguments(again)
    assert spec_from_args(again.parse_args(to_argv(spec))) == spec


def test_bench_cycle_summary_prints_ratio_cores_busy_and_ceiling(capsys, monkeypatch):
    from types import SimpleNamespace

    from zdtmpy.bench import cycle_summary
    from zdtmpy.bench.cycle import GROUP_NAMES

    monkeypatch.setattr(cycle_summary, "_cpus", lambda: 2)

    def item(t):
        return {"item": "x[plain-off]", "test": "x", "outcome": "passed", "message": "",
                "time": t, "groups": {g: 0.0 for g in GROUP_NAMES}, "criu_dump": 0.1,
                "criu_restore": 0.1, "overhead": t - 0.2}

    runs = [{"workers": 1, "wall": 8.0, "cpu": 7.0, "load": [1.0, 1.2], "items": [item(0.7)] * 10},
            {"workers": 2, "wall": 5.0, "cpu": 7.2, "load": [1.1, 1.3], "items": [item(0.8)] * 10}]
    s = cycle_summary.summarize(runs, None)
    assert s["ratios"]["n1_over_n2_run_wall"] == 8.0 / 5.0
    assert abs(s["ratios"]["n1_over_n2_cpu_ceiling"] - 8.0 / 3.6) < 1e-9
    cycle_summary.print_report(s, 1, 1, SimpleNamespace(version_str="4.1.1", path="criu"))
    out = capsys.readouterr().out
    assert "whole run -n 1 / -n 2: 1.60x (target >= 1.8x: NOT met" in out
    assert "(0.88 of 2 CPUs busy)" in out and "(1.44 of 2 CPUs busy)" in out
    assert "every CPU busy from start to end: 2.22x" in out


def test_bench_cycle_timeline_phases(tmp_path):
    from zdtmpy.bench.cycle import timeline_phases

    tl = tmp_path / "tl"
    tl.write_text("11 100.5 101.0\n12 100.6 101.5\n11 101.0 102.0\n12 101.5 102.4\n")
    ph = timeline_phases(tl, 100.0, 103.0)
    assert ph is not None
    assert (round(ph["startup"], 3), round(ph["shutdown"], 3), round(ph["tail"], 3)) \
        == (0.5, 0.6, 0.4)
    assert timeline_phases(tmp_path / "missing", 0, 1) is None
    tl.write_text("11 garbage\n")
    assert timeline_phases(tl, 0, 1) is None


def test_bench_cycle_timeline_plugin_records_every_item(pytester, monkeypatch):
    """Loaded with -p, as bench cycle does: one line per item, in the process that ran it."""
    tl = pytester.path / "timeline"
    monkeypatch.setenv("ZDTMPY_BENCH_TIMELINE", str(tl))
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    res = pytester.runpytest_subprocess("-p", "zdtmpy.bench.cycle_timeline", "-p",
                                        "no:cacheprovider")
    res.assert_outcomes(passed=2)
    lines = [ln.split() for ln in tl.read_text().splitlines()]
    assert len(lines) == 2 and len({pid for pid, _, _ in lines}) == 1
    assert all(float(a) <= float(b) for _, a, b in lines)
