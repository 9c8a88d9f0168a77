"""Parent chains with a real criu: `zdtmpy rebase` output restores and is much smaller than
the full dump; the chain modes through the plugin pass, the dirty-tracking ones pass or skip
with one clear reason."""

import os
from pathlib import Path

import pytest

from zdtmpy import oracle
from zdtmpy.cli import main
from zdtmpy.compress import decompress_dir
from zdtmpy.compress.chain import same_content, verify_chain
from zdtmpy.cycle.transforms import link_copy
from zdtmpy.images import ImageSet

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "zdtmpy" / "workloads"

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(os.geteuid() != 0, reason="criu dump/restore needs root"),
]


def pages_bytes(d):
    return sum(p.stat().st_size for p in Path(d).glob("pages-*.img"))


@pytest.fixture
def pages03(tmp_path):
    from zdtmpy.workload import Workload, build_workload

    wl = Workload(build_workload("pages03", static_dir=STATIC), tmp_path, start_timeout=30)
    yield wl
    wl.kill()


@pytest.mark.parametrize("how", [[], ["--region", "64K"], ["--compress"]],
                         ids=["plain", "region64k", "page"])
def test_rebase_cli_output_restores_and_is_smaller(tmp_path, pages03, how, capsys, criu):
    wl = pages03
    one, two = tmp_path / "img" / "1", tmp_path / "img" / "2"

    def dump(d, *extra):
        d.mkdir(parents=True)
        criu.run("dump", ["-t", str(pid), "-D", str(d), *extra], log=d.parent / f"{d.name}.log",
                 stage=f"dump {d.name}", timeout=60)

    pid = wl.start()
    m0 = wl.manifest()
    dump(one, "--leave-running")
    m1 = wl.next_step(pid, timeout=30)
    assert m1.step == 1
    dump(two)  # the tree is gone now
    wl.wait_launcher(30)
    full = link_copy(two, tmp_path / "full2")

    assert main(["rebase", str(two), "--parent", str(one), "--in-place", *how]) == 0
    message = capsys.readouterr().out
    before, after = pages_bytes(full), pages_bytes(two)
    with capsys.disabled():
        print(f"\n[{'+'.join(how) or 'plain'}] full dump pages {before} bytes, rebased layer "
              f"{after} bytes ({after / before:.4%}); {message.strip()}")
    assert after < before // 50, message  # 64 MiB; step 1 changes about a hundred pages
    assert os.readlink(two / "parent") == "../1"
    assert ImageSet(two).img_version == (3 if how else 2)
    assert verify_chain(two) == []
    assert same_content(full, two) == []
    assert oracle.check(one, m0) == []
    assert oracle.check(two, m1) == []

    if how:  # criu 4.1 cannot read compressed layers: make the chain plain first
        decompress_dir(two, in_place=True, chain=True)
        assert ImageSet(two).img_version == 2 and verify_chain(two) == []
    pidfile = tmp_path / "restore.pid"
    criu.run("restore", ["-D", str(two), "-d", "--pidfile", str(pidfile)],
             log=tmp_path / "restore.log", stage="restore", timeout=60)
    restored = int(pidfile.read_text())
    verdict = wl.stop(restored, timeout=30)
    assert verdict.status == "PASS", verdict.output


def test_plugin_chain_modes(criu, pytester):
    """pages03 through the plugin: chain items pass; pre/snaps pass where the kernel tracks
    dirty memory and otherwise skip, every one with the same clear reason."""
    pytester.makeini("[pytest]\nzdtm_descs = descs\nzdtm_static = static\n")
    (pytester.path / "descs").mkdir()
    (pytester.path / "static").mkdir()
    (pytester.path / "static" / "lib").symlink_to(STATIC / "lib")
    (pytester.path / "static" / "pages03.c").symlink_to(STATIC / "pages03.c")
    (pytester.path / "descs" / "pages03.desc").write_text("{}")
    res = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "descs", "--zdtm-mode", "chain", "--zdtm-mode", "pre",
        "--zdtm-mode", "snaps", "--zdtm-compress", "off", "--zdtm-compress", "region64k",
        "--criu-bin", str(criu.path))
    # chain: 4 pairs over {off, region64k}; pre and snaps: one item per compression
    if criu.has_feature("mem_dirty_track"):
        res.assert_outcomes(passed=8)
        return
    res.assert_outcomes(passed=4, skipped=4)
    text = res.stdout.str()
    for mode in ("pre", "snaps"):
        assert (f"mode {mode}: the kernel has no dirty-memory tracking (soft-dirty) "
                "(criu check --feature mem_dirty_track)") in text
