"""Chain modes: the after-dump hook sees every layer as restore will read it, and a page
changed there is reported with its pid and address."""

import json
from pathlib import Path

import pytest

from zdtmpy.build import cache_root

RECORDER = '''
import json
from zdtmpy.images import ImageSet

def pytest_zdtm_after_dump(item, images):
    s = ImageSet(images)
    with open("hook-calls.jsonl", "a") as f:
        f.write(json.dumps({"layer": images.name, "compress": bool(s.compress),
                            "parent": s.parent_link is not None}) + "\\n")
'''

CORRUPTER = '''
def pytest_zdtm_after_dump(item, images):
    if images.name != "2":
        return
    pages = max(images.glob("pages-*.img"), key=lambda p: p.stat().st_size)
    with open(pages, "r+b") as f:
        f.seek((pages.stat().st_size // 2) & ~4095)
        f.write(b"\\x5a" * 4096)
'''

# The real build cache, read before pytester points HOME at its temporary directory: inner
# runs share the workloads built once instead of compiling them again each.
BUILD_CACHE = cache_root()


@pytest.fixture
def project(criu, pytester, monkeypatch):
    # the session's criu (tests/conftest.py, found before pytester moved HOME) for the runs
    monkeypatch.setenv("ZDTM_CRIU", str(criu.path))
    monkeypatch.setenv("ZDTMPY_CACHE", str(BUILD_CACHE))
    pytester.makeini("[pytest]\nzdtm_descs = descs\n")
    (pytester.path / "descs").mkdir()
    (pytester.path / "descs" / "pages01.desc").write_text("{}")
    return pytester


def _run(project, item):
    return project.runpytest_subprocess("-p", "no:cacheprovider", "--zdtm-mode", "chain",
                                        f"descs/pages01.desc::pages01[{item}]")


@pytest.mark.criu
def test_hook_runs_per_layer_after_rebase_and_compression(project):
    project.makeconftest(RECORDER)
    _run(project, "chain-off+page").assert_outcomes(passed=1)
    calls = [json.loads(ln) for ln in
             Path(project.path, "hook-calls.jsonl").read_text().splitlines()]
    assert calls == [{"layer": "1", "compress": False, "parent": False},
                     {"layer": "2", "compress": True, "parent": True}]


@pytest.mark.criu
def test_page_changed_in_a_rebased_layer_is_named_by_pid_and_address(project):
    project.makeconftest(CORRUPTER)
    res = _run(project, "chain-off+off")
    res.assert_outcomes(failed=1)
    text = res.stdout.str()
    assert "stage 'verify'" in text
    assert "layer 2 of the rebased chain does not read back as its full dump" in text
    assert "pid 1 page 0x" in text and "stored in layer" in text
