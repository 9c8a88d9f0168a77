"""Upstream's hooks and .checkskip scripts never get the host's /tmp as TMPDIR: what they
leave there (cgroup_yard.hook's `tempfile.mkdtemp` when its cleanup fails half-way) goes with
the item, or with the call. Real scripts, run as the corpus runs them."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from zdtmpy.corpus import hooks
from zdtmpy.corpus.suite import Suite, UpstreamTest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the runner's namespaces need root")

# As cgroup_yard.hook: a mkdtemp, then a failure before its rmdir.
LEAVER = """#!{python}
import tempfile
open({out!r}, "w").write(tempfile.mkdtemp())
"""


def _tree(tmp_path: Path, suffix: str, out: Path) -> tuple[Suite, UpstreamTest]:
    static = tmp_path / "test" / "zdtm" / "static"
    static.mkdir(parents=True)
    script = static / f"probe{suffix}"
    script.write_text(LEAVER.format(python=sys.executable, out=str(out)))
    script.chmod(0o755)
    return Suite(static.parent), UpstreamTest(name="zdtm/static/probe", subdir="static",
                                               short="probe", argv=())


def _host_tmp() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


def test_a_hook_makes_its_temporary_directories_in_the_items_own(tmp_path):
    out = tmp_path / "made"
    suite, test = _tree(tmp_path, ".hook", out)
    item_tmp = tmp_path / "item" / ".tmp"
    item_tmp.mkdir(parents=True)
    before = _host_tmp()
    hooks.run_hook(suite, test, "--clean", item_tmp)
    made = Path(out.read_text())
    if made.parent != item_tmp:
        made.rmdir()   # this test leaves nothing behind either
    assert made.parent == item_tmp and made.is_dir()   # goes with the item's directory
    assert {n for n in _host_tmp() - before if n.startswith("tmp")} == set()


def test_a_checkskip_gets_a_temporary_directory_that_goes_with_the_call(tmp_path):
    out = tmp_path / "made"
    suite, test = _tree(tmp_path, ".checkskip", out)
    before = _host_tmp()
    assert hooks.checkskip(suite, test) is None
    made = Path(out.read_text())
    if made.parent == Path(tempfile.gettempdir()):
        made.rmdir()
    assert made.parent.name.startswith("zdtmpy-checkskip-")
    assert not made.parent.exists()   # removed, with what the script left in it
    assert {n for n in _host_tmp() - before if n.startswith(("tmp", "zdtmpy-checkskip-"))} \
        == set()
