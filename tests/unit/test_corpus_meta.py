"""The corpus room's metadata readers: upstream Makefile groups, test sets, .desc files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zdtmpy.corpus import makefile, suite, updesc
from zdtmpy.errors import DescriptorError, ZdtmError

MAKEFILE = """\
LIBDIR	:= ../lib
TST_NOFILE	:=				\\
		pipe00			\\
		maps00			\\

TST_NOFILE	+=	zombie00  # a comment
TST_FILE	=				\\
		write_read00		\\

TST_DIR		=	cwd00
TST_DIR_FILE	=	unlink_dir
TST		=				\\
		$(TST_NOFILE)			\\
		$(TST_FILE)			\\
		env00				\\

TST_STATE	=	conntracks

env00.pid:	env00
	$(<D)/$(<F) --pidfile=$@ --outfile=$<.out --envname=ENV_00_TEST

cwd00:	CFLAGS += -DX
"""


def _tree(tmp_path: Path, exclude=("static/env00",)) -> Path:
    static = tmp_path / "criu-9.9" / "test" / "zdtm" / "static"
    static.mkdir(parents=True)
    (static / "Makefile").write_text(MAKEFILE)
    (static.parent.parent / "zdtm.desc").write_text(
        f"{{'dir': 'zdtm/', 'exclude': {list(exclude)!r}}}")
    return tmp_path / "criu-9.9"


def test_groups_and_own_rules_decide_argv(tmp_path):
    tree = _tree(tmp_path)
    parsed = makefile.read(tree / "test/zdtm/static/Makefile")
    assert parsed.argv["pipe00"] == ()
    assert parsed.argv["zombie00"] == ()
    assert parsed.argv["write_read00"] == ("--filename=$<.test",)
    assert parsed.argv["cwd00"] == ("--dirname=$<.test",)
    assert parsed.argv["unlink_dir"] == ("--dirname=$<.dir.test", "--filename=$<.test")
    assert parsed.argv["env00"] == ("--envname=ENV_00_TEST",)
    assert parsed.state_tests == ("conntracks",)
    assert makefile.command(Path("./unlink_dir"), "unlink_dir", parsed.argv["unlink_dir"]) == [
        "unlink_dir", "--pidfile=unlink_dir.pid", "--outfile=unlink_dir.out",
        "--dirname=unlink_dir.dir.test", "--filename=unlink_dir.test"]


def test_makefile_without_tests_is_named(tmp_path):
    mk = tmp_path / "Makefile"
    mk.write_text("all:\n\ttrue\n")
    with pytest.raises(ZdtmError, match=str(mk)):
        makefile.read(mk)


def test_suite_lists_tests_with_upstream_exclusions(tmp_path):
    s = suite.resolve(str(_tree(tmp_path)), None)
    assert s.label == "criu-9.9"
    tests = {t.name: t for t in s.tests()}
    assert "zdtm/static/maps00" in tests and not tests["zdtm/static/maps00"].excluded
    assert "zdtm.desc" in tests["zdtm/static/env00"].excluded
    assert "statefile" in tests["zdtm/static/conntracks"].excluded
    # the test/zdtm directory itself names the same suite
    assert suite.resolve(str(s.zdtm), None) == s


def test_resolve_refuses_what_is_not_a_tree(tmp_path):
    with pytest.raises(ZdtmError, match="not a criu source tree"):
        suite.resolve(str(tmp_path), None)
    with pytest.raises(ZdtmError, match="no usable criu"):
        suite.resolve("criu", None)
    fake = tmp_path / "bin" / "criu"
    fake.parent.mkdir()
    fake.write_text("")
    with pytest.raises(ZdtmError, match="not built in a criu source tree"):
        suite.resolve("criu", fake)
    tree = _tree(tmp_path / "t")
    (tree / "criu").mkdir()
    assert suite.resolve("criu", tree / "criu" / "criu").tree == tree.resolve()


def test_upstream_desc(tmp_path):
    d = tmp_path / "x.desc"
    d.write_text("{'flavor': 'h ns', 'flags': 'suid crlib', 'timeout': '60', "
                 "'deps': ['/no/such|/bin/sh'], 'feature': 'mnt_id', 'opts': '--tcp-close'}")
    desc = updesc.load(d, "zdtm/static/x")
    assert desc.name == "zdtm/static/x"
    assert desc.flavor == ("h", "ns")
    assert desc.has("suid") and desc.has("crlib")
    assert desc.timeout == 60
    expected = ("/bin/sh",) if os.path.exists("/bin/sh") else ("/no/such",)
    assert desc.deps == expected
    assert desc.opts == ("--tcp-close",)
    assert updesc.load(None, "zdtm/static/y").flavor == ("h", "ns", "uns")


def test_upstream_desc_that_is_code_is_refused_not_run(tmp_path):
    d = tmp_path / "x.desc"
    marker = tmp_path / "ran"
    d.write_text(f"open({str(marker)!r}, 'w') and {{'flags': 'noauto'}}")
    with pytest.raises(updesc.DescriptorIsCode, match="code is not allowed"):
        updesc.load(d, "zdtm/static/x")
    assert not marker.exists()
    d.write_text("{'flags': ")
    with pytest.raises(DescriptorError, match=str(d)):
        updesc.load(d, "zdtm/static/x")


def test_option_relative_to_upstreams_images_dir_names_the_same_path_under_test(tmp_path):
    """criu works in test/dump/<test>/<pid>/<n> under zdtm.py: cgroup_yard's desc climbs six
    levels to test/external_yard."""
    from zdtmpy.corpus.hooks import upstream_relative

    test = suite.UpstreamTest("zdtm/static/cgroup_yard", "static", "cgroup_yard", ())
    opts = ("--manage-cgroups", "--cgroup-yard", "../../../../../../external_yard",
            "../inside-dump", "--log", "rel")
    assert upstream_relative(opts, test, tmp_path) == (
        "--manage-cgroups", "--cgroup-yard", str(tmp_path / "external_yard"),
        "../inside-dump", "--log", "rel")
