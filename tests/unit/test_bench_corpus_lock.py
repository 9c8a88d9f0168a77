"""bench corpus runs one zdtm.py per criu tree at a time (upstream_alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zdtmpy.bench import BenchError
from zdtmpy.bench.corpus import upstream_alone


def test_a_second_bench_on_the_same_tree_fails_at_once_naming_it(tmp_path: Path) -> None:
    with upstream_alone(tmp_path):
        with pytest.raises(BenchError, match=f"running zdtm.py in {tmp_path}"):
            with upstream_alone(tmp_path):
                pass


def test_the_tree_is_free_again_after_the_first_ends_even_by_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with upstream_alone(tmp_path):
            raise RuntimeError("zdtm.py failed")
    with upstream_alone(tmp_path):
        pass


def test_other_trees_are_not_held(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with upstream_alone(tmp_path / "a"), upstream_alone(tmp_path / "b"):
        pass
