"""criu over RPC (criu swrk) with a real criu, through the plugin: notifications arrive in
criu's order, and the same workload dumped by the command line and by RPC gives the same
images."""

import os
import re
from pathlib import Path

import pytest

from zdtmpy.images import ImageSet
from zdtmpy.images.pagemap import PAGE_SIZE, PE_PRESENT
from zdtmpy.workload import parse_manifest

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(os.geteuid() != 0, reason="criu dump/restore needs root"),
]


@pytest.fixture(scope="session")
def criu_path(criu):
    """The session's criu (tests/conftest.py), found before pytester moves HOME."""
    return str(criu.path)


@pytest.fixture
def kept(criu_path, pytester):
    """pages00 plain-off run by both APIs, test directories kept."""
    pytester.makeini("[pytest]\nzdtm_descs = descs\n")
    (pytester.path / "descs").mkdir()
    (pytester.path / "descs" / "pages00.desc").write_text("{}")
    results = pytester.path / "results"
    res = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "descs", "--zdtm-mode", "plain", "--zdtm-compress", "off",
        "--zdtm-criu-api", "cli", "--zdtm-criu-api", "rpc", "--zdtm-keep", "--zdtm-timeout", "120",
        "--zdtm-results", str(results), "--criu-bin", criu_path)
    res.assert_outcomes(passed=2)
    return results / "pages00-plain-off", results / "pages00-plain-off-rpc"


def _scripts(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()]


def test_notifications_arrive_in_criu_order(kept):
    _, rpc = kept
    dump = _scripts(rpc / "dump.log.notify")
    restore = _scripts(rpc / "restore.log.notify")
    assert [s for s in dump if s in ("pre-dump", "post-dump")] == ["pre-dump", "post-dump"]
    wanted = ["pre-restore", "post-restore", "pre-resume", "post-resume"]
    assert [s for s in restore if s in wanted] == wanted
    assert not (kept[0] / "dump.log.notify").exists()  # the command line has no RPC


def _summary(images: Path) -> dict:
    """What must not depend on the API. Shared-memory ids are inode numbers: only their
    page counts are compared."""
    iset = ImageSet(images)
    files = sorted(re.sub(r"-shmem-\d+", "-shmem-N", p.name) for p in images.iterdir()
                   if p.name.endswith(".img"))
    out: dict = {"files": files, "pids": sorted(iset.pids()), "shmem": []}
    for key, pm in iset.pagemaps.items():
        if isinstance(key, tuple):
            out["shmem"].append(sum(e.nr_pages for e in pm.entries if e.flags & PE_PRESENT))
    out["shmem"].sort()
    # the workload's own regions: their present pages (stacks and libc may vary by a page)
    manifest = parse_manifest((images.parent / "manifest").read_text())
    regions = []
    for region in manifest.regions:
        pm = iset.pagemaps.get(region.pid)
        present = 0 if pm is None else sum(
            max(0, min(e.vaddr + e.nr_pages * PAGE_SIZE, region.end) - max(e.vaddr,
                region.start)) // PAGE_SIZE
            for e in pm.entries if e.flags & PE_PRESENT)
        regions.append((region.label, region.gen, region.pages, present))
    out["regions"] = sorted(regions)
    return out


def test_cli_and_rpc_images_agree(kept):
    cli, rpc = kept
    assert _summary(cli / "img") == _summary(rpc / "img")
