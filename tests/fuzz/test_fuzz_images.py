"""Fuzz the image tools (reader, verify, show, compress, decompress, rebase, and the
rewrite recovery) with mutated criu image sets: every case ends in success or the tools'
own error, within its deadline and memory cap; a refusal leaves the set byte-identical;
nothing outside the image directory ever changes."""

import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest
from fuzzkit import Counts, guard, outcome, sandbox, snapshot
from hypothesis import given
from hypothesis import strategies as st
from imagemut import mutations

from zdtmpy import cli
from zdtmpy.codec import Compression
from zdtmpy.compress import compress_dir, decompress_dir, recover, verify_dir
from zdtmpy.compress.install import JOURNAL_TMP, STAGE
from zdtmpy.compress.rebase import rebase_dir
from zdtmpy.errors import ZdtmError
from zdtmpy.images import ImageSet, PageReader
from zdtmpy.images.imageset import JOURNAL

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1"
FORMATS = ["plain", "page", "region64k"]
TOOLS = ["reader", "verify", "show", "compress", "decompress", "rebase"]
READ_ONLY = {"reader", "verify", "show"}
BOOKKEEPING = (JOURNAL, JOURNAL_TMP, STAGE)


class Sets:
    """One pristine image set per format, and the page ranges the reader asks for."""

    def __init__(self, base: Path):
        self.base = base
        self.path = {}
        self.ranges = {}
        for fmt in FORMATS:
            d = base / fmt
            shutil.copytree(DATA / ("compressed" if fmt == "page" else "plain"), d)
            if fmt == "region64k":
                compress_dir(d, Compression("region", 64 << 10), in_place=True)
            self.path[fmt] = d
            iset = ImageSet(d)
            self.ranges[fmt] = [(pm.key, e.vaddr, min(e.nr_pages, 64))
                                for pm in iset.pagemaps.values() for e in pm.entries[:12]
                                if isinstance(pm.key, int)]

    def names(self, fmt):
        return sorted(os.listdir(self.path[fmt]))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return Sets(tmp_path_factory.mktemp("sets"))


def run_tool(tool, setdir, parent, fmt, sets):
    if tool == "reader":
        with PageReader(setdir) as r:
            for pid, vaddr, n in sets.ranges[fmt]:
                r.read(pid, vaddr, n)
    elif tool == "verify":
        verify_dir(setdir)
        verify_dir(setdir, chain=True)
    elif tool == "show":
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["show", str(setdir)])
        assert "Traceback" not in err.getvalue()
        if rc:
            raise ZdtmError(err.getvalue())
    elif tool == "compress":
        spec = Compression("page") if fmt == "region64k" else \
            Compression("region", 256 << 10)
        compress_dir(setdir, spec)
    elif tool == "decompress":
        decompress_dir(setdir, chain=True)
    elif tool == "rebase":
        rebase_dir(setdir, parent)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tool", TOOLS)
def test_image_tool_under_mutation(sets, tool, fmt):
    counts = Counts(f"images-{tool}-{fmt}")
    names = sets.names(fmt)

    @given(muts=st.lists(mutations(names), min_size=1, max_size=2))
    def case(muts):
        level = muts[0].level if len({m.level for m in muts}) == 1 else "mixed"
        with sandbox(sets.base) as root:
            setdir = root / "set"
            shutil.copytree(sets.path[fmt], setdir)
            parent = root / "parent"
            shutil.copytree(sets.path[fmt], parent)
            for m in muts:
                with contextlib.suppress(ZdtmError, OSError):  # stacked on an earlier one
                    m.apply(setdir, root)
            outside = snapshot(root, skip=setdir)
            if any(os.path.lexists(setdir / n) for n in BOOKKEEPING):
                # an interrupted rewrite (or junk posing as one): recovery is a tool too
                before = snapshot(setdir)
                with guard(f"recover {muts}"):
                    got = outcome(lambda: recover(setdir))
                counts.add("recover", fmt, level, got)
                if got == "refused":
                    assert snapshot(setdir) == before, f"refused recovery changed {setdir}"
                assert snapshot(root, skip=setdir) == outside
            before = snapshot(setdir)
            with guard(f"{tool} {muts}"):
                got = outcome(lambda: run_tool(tool, setdir, parent, fmt, sets))
            counts.add(tool, fmt, level, got)
            assert snapshot(root, skip=setdir) == outside, f"{tool} wrote outside {setdir}"
            if got == "refused" or tool in READ_ONLY:
                assert snapshot(setdir) == before, f"{tool} ({got}) changed {setdir}"

    try:
        case()
    finally:
        counts.report()
