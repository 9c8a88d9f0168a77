"""The plugin as a user meets it, through pytester: real criu, real workloads.

Each test builds a small project (descriptors, maybe a workload of its own) and runs pytest
on it in a subprocess, then reads the outcome and the report text.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "zdtmpy" / "workloads" / "lib"


@pytest.fixture
def project(pytester):
    pytester.makeini("[pytest]\nzdtm_descs = descs\nzdtm_static = static\n")
    (pytester.path / "descs").mkdir()
    (pytester.path / "static").mkdir()
    (pytester.path / "static" / "lib").symlink_to(LIB)
    return pytester


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--zdtm-mode", "plain",
                                         *args)


@pytest.fixture
def criu_run(criu, project):
    """run() in the project with the session's criu (tests/conftest.py) as --criu-bin."""
    def go(*args):
        return run(project, "--criu-bin", str(criu.path), *args)
    return go


@pytest.mark.criu
def test_unknown_key_fails_that_file_only(project, criu_run):
    (project.path / "descs" / "bad.desc").write_text("{'flavor': 'h', 'optz': '--x'}")
    (project.path / "descs" / "pages01.desc").write_text("{}")
    res = criu_run("descs", "--zdtm-compress", "off")
    res.assert_outcomes(passed=1, failed=1)
    text = res.stdout.str()
    assert "bad.desc: unknown key 'optz'" in text
    assert "expected one of:" in text


def test_missing_criu_path_is_one_clear_error(project):
    (project.path / "descs" / "pages01.desc").write_text("{}")
    res = run(project, "descs", "--criu-bin", "/no/such/criu")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "criu binary /no/such/criu does not exist" in res.stderr.str()
    assert res.stderr.str().count("does not exist") == 1


def test_no_criu_skips_once_with_reason(project, tmp_path):
    """No criu anywhere: every item skips with the same visible reason, and with
    ZDTM_REQUIRE_CRIU the run fails instead of passing with everything skipped."""
    (project.path / "descs" / "pages01.desc").write_text("{}")
    env = {"PATH": "/usr/bin:/bin", "ZDTMPY_CACHE": str(tmp_path / "empty-cache"),
           "ZDTM_CRIU": "", "ZDTM_REQUIRE_CRIU": ""}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        res = run(project, "descs", "--zdtm-compress", "off", "--zdtm-compress", "page")
        res.assert_outcomes(skipped=2)
        assert "SKIPPED [2]" in res.stdout.str()
        assert "criu unavailable: no usable criu" in res.stdout.str()
        res = run(project, "descs", "--zdtm-require-criu")
        assert res.ret == pytest.ExitCode.USAGE_ERROR
        assert "no usable criu" in res.stderr.str()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.criu
def test_workload_that_does_not_compile(project, criu_run):
    (project.path / "static" / "broken.c").write_text(
        '#include "lib/zdtmtst.h"\nint main(void) { return undeclared_thing; }\n')
    (project.path / "descs" / "broken.desc").write_text("{}")
    res = criu_run("descs", "--zdtm-compress", "off")
    res.assert_outcomes(failed=1)
    text = res.stdout.str()
    assert "stage 'build'" in text
    assert "broken.c" in text and "undeclared_thing" in text


@pytest.mark.criu
def test_corrupt_page_between_dump_and_restore_is_caught(project, criu_run):
    """One page of the pages image changed after the dump: the oracle names it, and with the
    oracle off the restored workload's own check fails the test."""
    (project.path / "descs" / "pages00.desc").write_text("{}")
    project.makeconftest('''
def pytest_zdtm_after_dump(item, images):
    # the middle of the largest pages file lies in pages00's big pattern region
    pages = max(images.glob("pages-*.img"), key=lambda p: p.stat().st_size)
    size = pages.stat().st_size
    with open(pages, "r+b") as f:
        f.seek((size // 2) & ~4095)
        f.write(b"\\xa5" * 4096)
''')
    res = criu_run("descs", "--zdtm-compress", "off")
    res.assert_outcomes(failed=1)
    text = res.stdout.str()
    assert "stage 'oracle'" in text
    assert "content differs from the manifest" in text

    res = criu_run("descs", "--zdtm-compress", "off", "--zdtm-no-oracle")
    res.assert_outcomes(failed=1)
    text = res.stdout.str()
    assert "stage 'verdict'" in text
    assert "workload says FAIL" in text
    assert "test directory kept" in text


@pytest.mark.criu
def test_workload_that_writes_fail(project, criu_run):
    """The workload survives dump and restore but reports FAIL: the test fails at 'verdict'
    and shows the workload's own words."""
    (project.path / "static" / "failing.c").write_text(
        '#include "lib/zdtmtst.h"\n'
        "int main(int argc, char **argv)\n{\n"
        "\tzt_init(argc, argv);\n"
        '\tzt_fail("deliberate failure at %s", "the checkpoint");\n'
        "\tzt_ready();\n\tzt_run(NULL, NULL);\n}\n")
    (project.path / "descs" / "failing.desc").write_text("{}")
    res = criu_run("descs", "--zdtm-compress", "off")
    res.assert_outcomes(failed=1)
    text = res.stdout.str()
    assert "stage 'verdict'" in text
    assert "workload says FAIL: deliberate failure at the checkpoint" in text
    assert "workload output" in text


def _processes_in(project) -> list[int]:
    """Live processes whose working directory is inside this test's project: workloads run
    in their test directory, and other tests (in parallel under xdist) run elsewhere."""
    root = str(project.path)
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd").startswith(root + "/"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.mark.criu
def test_nothing_left_behind_after_pass_and_after_a_timeout(project, criu_run):
    """A passing test removes its directory; a workload that hangs before it is ready makes
    the 'start' stage time out, and its whole PID namespace is killed."""
    (project.path / "static" / "hang.c").write_text(
        '#include <unistd.h>\n#include "lib/zdtmtst.h"\n'
        "int main(int argc, char **argv)\n{\n"
        "\tzt_init(argc, argv);\n\tfor (;;) pause();\n}\n")
    (project.path / "descs" / "hang.desc").write_text("{}")
    (project.path / "descs" / "pages01.desc").write_text("{}")
    res = criu_run("descs", "--zdtm-compress", "off", "--zdtm-timeout", "2")
    res.assert_outcomes(passed=1, failed=1)
    text = res.stdout.str()
    assert "hang[plain-off]" in text and "stage 'start'" in text
    assert _processes_in(project) == []
    left = sorted(p.name for p in (project.path / "zdtm-results").iterdir()
                  if not p.name.startswith("."))
    assert left == ["hang-plain-off"]  # only the failure's directory is kept


@pytest.mark.criu
def test_noauto_runs_only_when_named(project, criu_run):
    (project.path / "descs" / "pages01.desc").write_text("{}")
    (project.path / "descs" / "pages02.desc").write_text("{'flags': 'noauto'}")
    res = criu_run("descs", "--zdtm-compress", "off")
    res.assert_outcomes(passed=1, deselected=1)
    res = criu_run("descs/pages02.desc", "--zdtm-compress", "off")
    res.assert_outcomes(passed=1)
    res = criu_run("descs", "--zdtm-compress", "off", "-k", "pages02")
    res.assert_outcomes(passed=1, deselected=1)


@pytest.mark.criu
def test_crfail_passes_only_when_criu_fails_cleanly(project, criu_run):
    """crfail: a clean criu refusal passes (and the untouched workload must still PASS);
    a dump that succeeds fails the test."""
    (project.path / "descs" / "refused.yaml").write_text(
        "workload: pages01\nflags: [crfail]\ndopts: --no-such-criu-option\n")
    (project.path / "descs" / "dumped.yaml").write_text("workload: pages01\nflags: [crfail]\n")
    res = criu_run("descs", "--zdtm-compress", "off")
    res.assert_outcomes(passed=1, failed=1)
    text = res.stdout.str()
    assert "dumped[plain-off]" in text
    assert "succeeded, but the test is marked crfail" in text
    assert _processes_in(project) == []
