"""JUnit properties, the JSON report over shards (one under xdist) and compare, with real
criu and real workloads, run the way a CI job runs them (pytester subprocesses)."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from zdtmpy.cli import main

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "zdtmpy" / "workloads" / "lib"

FAILING_C = ('#include "lib/zdtmtst.h"\n'
             "int main(int argc, char **argv)\n{\n"
             "\tzt_init(argc, argv);\n"
             '\tzt_fail("deliberate failure at %s", "the checkpoint");\n'
             "\tzt_ready();\n\tzt_run(NULL, NULL);\n}\n")
CORRUPT_CONFTEST = '''
def pytest_zdtm_after_dump(item, images):
    pages = max(images.glob("pages-*.img"), key=lambda p: p.stat().st_size)
    with open(pages, "r+b") as f:
        f.seek((pages.stat().st_size // 2) & ~4095)
        f.write(b"\\xa5" * 4096)
'''


@pytest.fixture
def project(criu, pytester):
    pytester.makeini("[pytest]\nzdtm_descs = descs\nzdtm_static = static\n")
    (pytester.path / "descs").mkdir()
    (pytester.path / "static").mkdir()
    (pytester.path / "static" / "lib").symlink_to(LIB)
    return pytester


def run(pytester, criu, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--zdtm-mode", "plain",
                                         "--criu-bin", str(criu.path), *args)


def junit_properties(path: Path) -> dict:
    out = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        out[tc.get("name")] = {p.get("name"): p.get("value") for p in tc.iter("property")}
    return out


@pytest.mark.criu
def test_properties_of_a_passing_and_a_failing_item(project, criu):
    (project.path / "descs" / "pages01.desc").write_text("{}")
    (project.path / "static" / "failing.c").write_text(FAILING_C)
    (project.path / "descs" / "failing.desc").write_text("{}")
    xml = project.path / "junit.xml"
    res = run(project, criu, "descs", "--zdtm-compress", "page", f"--junitxml={xml}")
    res.assert_outcomes(passed=1, failed=1)
    props = junit_properties(xml)

    ok = props["pages01[plain-page]"]
    assert ok["zdtm_criu_bin"] == str(criu.path)
    assert ok["zdtm_criu_version"] == criu.version_str
    assert ok["zdtm_mode"] == "plain" and ok["zdtm_compression"] == "page"
    assert ok["zdtm_acceleration"] == "1" and ok["zdtm_flavor"] == "h"
    assert ok["zdtm_kernel"].split()[0] == __import__("platform").release()
    for stage in ("build", "start", "dump", "compress", "decompress", "restore", "verdict"):
        assert float(ok[f"zdtm_stage_{stage}_s"]) >= 0
    before, after = int(ok["zdtm_image_bytes_before"]), int(ok["zdtm_image_bytes_after"])
    assert before > after > 0  # pages01's pattern pages compress
    assert float(ok["zdtm_image_ratio"]) == pytest.approx(before / after, rel=1e-3)
    assert "zdtm_failed_stage" not in ok

    bad = props["failing[plain-page]"]
    assert bad["zdtm_failed_stage"] == "verdict"
    assert bad["zdtm_mode"] == "plain" and "zdtm_stage_verdict_s" in bad


@pytest.mark.criu
def test_two_shards_reports_merge_into_the_full_run(project, criu, capsys):
    (project.path / "descs" / "pages01.desc").write_text("{}")
    (project.path / "descs" / "pages01b.yaml").write_text("workload: pages01\n")
    comps = ("--zdtm-compress", "off", "--zdtm-compress", "region64k")
    full = project.runpytest_subprocess("--co", "-q", "-p", "no:cacheprovider", "--zdtm-mode",
                                        "plain", *comps, "descs")
    full_ids = {ln for ln in full.stdout.lines if "::" in ln}
    assert len(full_ids) == 4
    a, b = project.path / "shard1.json", project.path / "shard2.json"
    # shard 1 under xdist: the controller writes the report from the workers' reports
    run(project, criu, "descs", *comps, "--zdtm-shard", "1/2", "-n", "2", f"--zdtm-report={a}")
    run(project, criu, "descs", *comps, "--zdtm-shard", "2/2", f"--zdtm-report={b}")
    docs = [json.loads(p.read_text()) for p in (a, b)]
    ids = [i["id"] for d in docs for i in d["items"]]
    assert sorted(ids) == sorted(full_ids)  # disjoint, and together the full run
    assert all(i["outcome"] == "passed" and i["stages"]["restore"] > 0
               for d in docs for i in d["items"])
    assert docs[0]["sessions"][0]["shard"] == "1/2"
    assert docs[0]["sessions"][0]["criu"]["version"] == criu.version_str

    assert main(["report", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "complete: 2/2 shards, 4 items" in out
    assert [ln.split() for ln in out.splitlines() if ln.startswith("plain")] == [
        ["plain", "off", "2", "0", "0"], ["plain", "region64k", "2", "0", "0"]]


@pytest.mark.criu
def test_compare_names_the_test_whose_outcome_changed(project, criu, capsys):
    (project.path / "descs" / "pages00.desc").write_text("{}")
    base, new = project.path / "base.json", project.path / "new.json"
    run(project, criu, "descs", "--zdtm-compress", "off", f"--zdtm-report={base}")
    project.makeconftest(CORRUPT_CONFTEST)  # the "new build" corrupts a page
    run(project, criu, "descs", "--zdtm-compress", "off", f"--zdtm-report={new}")
    assert main(["report", str(new), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert ("descs/pages00.desc::pages00[plain-off]: passed -> failed "
            "(failed at stage oracle)") in out
    assert "1 test(s) passed in the baseline and fail now" in out
