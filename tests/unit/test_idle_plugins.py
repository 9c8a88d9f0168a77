"""hypothesis' pytest plugin is dropped from sessions that never use it (it would import all
of hypothesis at the end of every process), and kept in sessions that do."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("hypothesis")

REPORT_MODULES = """
import sys
def pytest_unconfigure(config):
    who = getattr(config, "workerinput", {}).get("workerid", "main")
    with open(f"hypothesis-{who}.txt", "w") as f:
        f.write("imported" if "hypothesis" in sys.modules else "not imported")
"""


def _pytest(args, cwd):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTEST_ADDOPTS": ""})


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_a_session_without_hypothesis_tests_never_imports_it(tmp_path, workers):
    (tmp_path / "conftest.py").write_text(REPORT_MODULES)
    (tmp_path / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n"
                                            "def test_two():\n    assert 2 + 2 == 4\n")
    res = _pytest(["-q", *workers, "test_plain.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    seen = {p.name: p.read_text() for p in tmp_path.glob("hypothesis-*.txt")}
    assert seen and set(seen.values()) == {"not imported"}, seen
    assert len(seen) == (3 if workers else 1)   # the controller and both workers reported


def test_a_session_with_hypothesis_tests_keeps_its_plugin(tmp_path):
    (tmp_path / "test_prop.py").write_text(
        "from hypothesis import given, strategies as st\n"
        "@given(st.integers())\n"
        "def test_prop(x):\n    assert x == x\n")
    res = _pytest(["-q", "--hypothesis-show-statistics", "test_prop.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Hypothesis Statistics" in res.stdout
