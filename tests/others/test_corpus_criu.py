"""CRIU's own ZDTM corpus through the plugin, as a user runs it: real criu, real upstream
tests built from the source tree the criu under test was built in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tree_criu(criu):
    """The session's criu (tests/conftest.py), when it was built in a criu source tree."""
    if not (Path(criu.path).resolve().parents[1] / "test" / "zdtm" / "static").is_dir():
        pytest.skip(f"criu {criu.path} was not built in a criu source tree "
                    "(ci/provision-criu.sh --from-source)")
    return criu


def _mounts_of(path: Path) -> list[str]:
    """Mounts whose source lies under path (the ns root is a bind of <results>/...)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(path) in line.split()[3] or str(path) in line.split()[4]]


def run(pytester, criu, *args):
    (pytester.path / "empty").mkdir(exist_ok=True)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--zdtm-mode", "plain",
                                         "--zdtm-compress", "off", "--zdtm-suite", "criu",
                                         "--criu-bin", str(criu.path), "--zdtm-as-root",
                                         "--zdtm-results", str(pytester.path / "zdtm-results"),
                                         "empty", *args)


@pytest.mark.criu
def test_upstream_tests_pass_in_h_and_ns_without_leftovers(tree_criu, pytester, monkeypatch):
    criu = tree_criu
    # zdtmpy's ZDTM_CRIU must not reach upstream's ns.c (it would bind-mount that path).
    monkeypatch.setenv("ZDTM_CRIU", str(criu.path))
    res = run(pytester, criu, "-k", "zdtm/static/pipe00[ or zdtm/static/write_read00[")
    res.assert_outcomes(passed=4)
    text = res.stdout.str()
    assert "flavor h mode plain: 2 passed, 0 failed, 0 skipped" in text
    assert "flavor ns mode plain: 2 passed, 0 failed, 0 skipped" in text
    assert _mounts_of(pytester.path) == []
    assert not any((pytester.path / "zdtm-results").glob("s-*"))


@pytest.mark.criu
def test_uns_runs_tests_as_upstream_in_a_user_namespace(tree_criu, pytester):
    """Without --zdtm-as-root: in uns criu owns the test's user namespace, so tests that switch
    to upstream's uid there still dump (h and ns would skip them for the missing capability)."""
    (pytester.path / "empty").mkdir()
    res = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--zdtm-mode", "plain", "--zdtm-compress", "off",
        "--zdtm-suite", "criu", "--criu-bin", str(tree_criu.path), "--zdtm-flavor", "uns",
        "--zdtm-keep", "--zdtm-results", str(pytester.path / "zdtm-results"),
        "--zdtm-corpus-tests", "pipe00 write_read00", "empty")
    res.assert_outcomes(passed=2)
    assert "flavor uns mode plain: 2 passed, 0 failed, 0 skipped" in res.stdout.str()
    roots = pytester.path / "zdtm-results" / "corpus-ns-root" / "items"
    for name in ("s-pipe00-plain-off", "s-write_read00-plain-off"):
        images = roots / f"uns-{name}" / "zdtm" / "static" / "img"
        assert list(images.glob("userns-*.img")), f"{images}: no user namespace dumped"
    assert _mounts_of(pytester.path) == []


@pytest.mark.criu
def test_ns_and_uns_of_one_test_have_roots_of_their_own(tree_criu, pytester):
    """Two workers may run a test's ns and uns items at once: each has its own root."""
    res = run(pytester, tree_criu, "--zdtm-flavor", "ns", "--zdtm-flavor", "uns", "--zdtm-keep",
              "-n", "2", "--zdtm-corpus-tests", "pipe00")
    res.assert_outcomes(passed=2)
    roots = pytester.path / "zdtm-results" / "corpus-ns-root" / "items"
    images = {f: roots / f"{f}-s-pipe00-plain-off" / "zdtm" / "static" / "img"
              for f in ("ns", "uns")}
    assert list(images["ns"].glob("core-*.img")) and not list(images["ns"].glob("userns-*"))
    assert list(images["uns"].glob("userns-*.img"))
    assert _mounts_of(pytester.path) == []


@pytest.mark.criu
def test_upstream_exclusions_are_skips_with_their_reason(tree_criu, pytester):
    res = run(pytester, tree_criu, "--zdtm-corpus-tests", "route_rules conntracks")
    res.assert_outcomes(skipped=4)
    text = res.stdout.str()
    assert "excluded: excluded by upstream's zdtm.desc" in text
    assert "statefile (start/stop protocol)" in text
    assert "flavor h mode plain: 0 passed, 0 failed, 2 skipped (2 excluded)" in text


def test_suite_option_refuses_a_directory_without_tests(pytester):
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--zdtm-suite",
                                        str(pytester.path))
    assert res.ret == 4  # usage error
    assert "not a criu source tree or its test/zdtm directory" in res.stderr.str()


def _upstream_mounts() -> set[tuple[int, str]]:
    from zdtmpy.corpus import leftmounts

    return {(m.mount_id, m.point) for m in leftmounts.table() if leftmounts.upstreams(m)}


@pytest.mark.criu
def test_ns_tests_mount_nothing_on_the_host(tree_criu, pytester):
    """mnt_ext_* mount a tmpfs at /tmp/zdtm_ext_auto.XXXXXX before entering their own
    namespaces; mnt_ext_manual's desc names its mount /zdtm/static/mnt_ext_manual.test, a
    path of upstream's root layout."""
    before = _upstream_mounts()
    res = run(pytester, tree_criu, "--zdtm-flavor", "ns", "--zdtm-corpus-tests",
              "mnt_ext_auto mnt_ext_manual")
    res.assert_outcomes(passed=2)
    assert _upstream_mounts() - before == set()
    assert _mounts_of(pytester.path) == []
    assert list(pytester.path.glob("**/corpus-ns-root/items/*")) == []  # roots go with tests


@pytest.mark.criu
def test_h_unix_socket_paths_fit_under_a_long_results_dir(tree_criu, pytester):
    """The test binds <cwd>/del_standalone_un_seqpacket.dir/sock: with the results dir's
    real path that would pass sun_path's 108 bytes."""
    import tempfile

    results = pytester.path / ("r" * 60) / ("s" * 30)
    res = run(pytester, tree_criu, "--zdtm-flavor", "h", "--zdtm-results", str(results),
              "--zdtm-corpus-tests", "del_standalone_un_seqpacket")
    res.assert_outcomes(passed=1)
    tmp = Path(tempfile.gettempdir())
    assert [p for p in tmp.glob("zdtmpy-h-*") if str(pytester.path) in os.readlink(p)] == []


@pytest.mark.criu
def test_fixed_name_host_links_are_private_to_the_test(tree_criu, pytester):
    """macvlan.hook adds zdtmbr0/zdtmmvlan0 where it runs: in the test's own network
    namespace, never where the session runs (here a namespace standing for the host)."""
    import subprocess

    from zdtmpy.corpus.netns import private_netns

    with private_netns():
        subprocess.run(["ip", "link", "add", "zdtmbr0", "type", "bridge"], check=True)
        res = run(pytester, tree_criu, "--zdtm-flavor", "ns", "--zdtm-corpus-tests", "macvlan")
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True,
                               check=True).stdout.split()
    res.assert_outcomes(passed=1)
    assert "zdtmbr0" in links and "zdtmmvlan0" not in links  # only the one made here


@pytest.mark.criu
def test_h_tests_run_in_a_pid_namespace_with_its_own_proc(tree_criu, pytester):
    """cgroupns's restored child opens /proc/1/ns/cgroup: under zdtm_ct pid 1 is a process of
    the test's own PID namespace; the host's init is off limits where root lacks
    CAP_SYS_RESOURCE. zombie00 and pstree need the pids criu restores to be free."""
    res = run(pytester, tree_criu, "--zdtm-flavor", "h", "--zdtm-corpus-tests",
              "cgroupns zombie00 pstree")
    res.assert_outcomes(passed=3)
    assert "flavor h mode plain: 3 passed, 0 failed, 0 skipped" in res.stdout.str()
    assert not any((pytester.path / "zdtm-results").glob("s-*"))


@pytest.mark.criu
def test_uns_lazy_pages_restore_and_the_sysctl_it_needs_is_put_back(tree_criu, pytester,
                                                                    monkeypatch):
    """criu's restored tasks open their userfaultfd inside the test's user namespace: the
    item sets vm.unprivileged_userfaultfd=1 and the session's end puts back what it found."""
    # A registry of its own: in the machine's, this very session is live, and the last
    # session out (this one, later) would be the one to put the value back.
    monkeypatch.setenv("ZDTMPY_REGISTRY", str(pytester.path / "registry"))
    knob = Path("/proc/sys/vm/unprivileged_userfaultfd")
    before = knob.read_text()
    res = run(pytester, tree_criu, "--zdtm-flavor", "uns", "--zdtm-mode", "lazy",
              "--zdtm-corpus-tests", "pipe00 maps00", "-k", "lazy-off")
    res.assert_outcomes(passed=2)
    assert "flavor uns mode lazy: 2 passed, 0 failed, 0 skipped" in res.stdout.str()
    assert knob.read_text() == before
