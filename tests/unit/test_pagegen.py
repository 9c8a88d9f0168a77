"""zdtmpy.pagegen: the C page generators through cffi (real compile, no mocks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from zdtmpy import pagegen

PAGE = pagegen.PAGE_SIZE
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch():
    d = Path(tempfile.mkdtemp(prefix="zdtmpy-pagegen-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _python(code: str, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, ZDTMPY_CACHE=str(cache), PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_import_compiles_nothing(scratch):
    p = _python("import sys, zdtmpy.pagegen as g; "
                "assert 'cffi' not in sys.modules and '_cffi_backend' not in sys.modules; "
                "print(g.GENS)", scratch)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert not any(scratch.iterdir()), "importing zdtmpy.pagegen created cache files"


def test_concurrent_first_use_builds_once(scratch):
    code = "import zdtmpy.pagegen as g; print(len(g.generate('random', 1, 2, 3)))"
    procs = [_python(code, scratch) for _ in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == str(3 * PAGE), out
    built = [d for d in (scratch / "pagegen").iterdir() if d.is_dir()]
    assert len(built) == 1, built  # one hash dir, no temp dirs left
    assert [f.name for f in built[0].iterdir()] == [
        "_zdtmpy_pagegen" + __import__("sysconfig").get_config_var("EXT_SUFFIX")]


def test_deterministic_and_sized():
    for gen in pagegen.GENS:
        a = pagegen.generate(gen, 7, 100, 5)
        assert len(a) == 5 * PAGE
        assert a == pagegen.generate(gen, 7, 100, 5)
        # page i of a run is the page at index+i on its own
        assert a[2 * PAGE:3 * PAGE] == pagegen.generate(gen, 7, 102, 1)
    assert pagegen.generate("random", 1, 0, 0) == b""


def test_generator_contents():
    assert pagegen.generate("zero", 9, 3, 2) == bytes(2 * PAGE)
    assert pagegen.generate("fill", 0x1a5, 0, 2) == b"\xa5" * 2 * PAGE
    r = pagegen.generate("random", 1, 0, 1)
    assert r != pagegen.generate("random", 2, 0, 1)  # seed matters
    assert r != pagegen.generate("random", 1, 1, 1)  # index matters
    assert len(set(r)) > 200  # looks random
    h = pagegen.generate("half", 1, 5, 1)
    assert h[:PAGE // 2] == pagegen.generate("random", 1, 5, 1)[:PAGE // 2]
    assert h[PAGE // 2:] == bytes(PAGE // 2)
    alt = pagegen.generate("alt", 4, 10, 4)
    assert alt[:PAGE] == pagegen.generate("random", 4, 10, 1)
    assert alt[PAGE:2 * PAGE] == bytes(PAGE)
    assert alt[2 * PAGE:3 * PAGE] == pagegen.generate("random", 4, 12, 1)
    assert alt[3 * PAGE:] == bytes(PAGE)
    p = pagegen.generate("pattern", 3, 0x1234, 1)
    assert b"p=0000000000001234" in p and b"s=0000000000000003" in p
    assert p != pagegen.generate("pattern", 3, 0x1235, 1)


def test_pattern_compresses_random_does_not():
    lz4 = pytest.importorskip("lz4.block")
    for gen, lo, hi in (("pattern", 8.0, None), ("random", None, 1.01)):
        data = pagegen.generate(gen, 3, 0, 64)
        packed = sum(len(lz4.compress(data[i:i + PAGE], store_size=False))
                     for i in range(0, len(data), PAGE))
        ratio = len(data) / packed
        if lo is not None:
            assert ratio >= lo, f"{gen}: LZ4 ratio {ratio:.1f}"
        if hi is not None:
            assert ratio <= hi, f"{gen}: LZ4 ratio {ratio:.2f}"


def test_first_mismatch():
    for gen in pagegen.GENS:
        data = bytearray(pagegen.generate(gen, 5, 40, 8))
        assert pagegen.first_mismatch(gen, 5, 40, 8, data) == -1
        data[5 * PAGE + 4095] ^= 0x01
        assert pagegen.first_mismatch(gen, 5, 40, 8, data) == 5
        assert pagegen.first_mismatch(gen, 5, 40, 5, data) == -1  # only the first 5 pages
        data[PAGE] ^= 0x80
        assert pagegen.first_mismatch(gen, 5, 40, 8, memoryview(data)) == 1
    # a shifted index is a different page for every generator that looks at it
    d = pagegen.generate("random", 1, 0, 2)
    assert pagegen.first_mismatch("random", 1, 1, 2, d) == 0
    # unaligned buffers work too
    buf = bytearray(1) + pagegen.generate("random", 1, 0, 2)
    assert pagegen.first_mismatch("random", 1, 0, 2, memoryview(buf)[1:]) == -1


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown page generator 'nope'.*zero, fill"):
        pagegen.generate("nope", 0, 0, 1)
    with pytest.raises(ValueError, match="fewer than 2 pages"):
        pagegen.first_mismatch("zero", 0, 0, 2, bytes(PAGE))
    with pytest.raises(ValueError, match="64-bit"):
        pagegen.generate("random", -1, 0, 1)
    with pytest.raises(ValueError, match="npages"):
        pagegen.generate("random", 1, 0, -1)
