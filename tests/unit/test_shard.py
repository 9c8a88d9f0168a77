"""--zdtm-shard: disjoint parts whose union is exactly the whole selection, for several N."""

from pathlib import Path

import pytest

from zdtmpy import descriptor, matrix
from zdtmpy.reporting import shard

REPO = Path(__file__).resolve().parents[2]


def full_matrix_ids() -> list[str]:
    """The default matrix of the project's descriptors, as item ids."""
    ids = []
    for path in sorted(p for p in (REPO / "zdtmpy" / "descs").iterdir()
                      if p.is_file() and p.suffix != ".py"):  # not __pycache__
        desc = descriptor.load(path)
        for v in matrix.variants(desc, matrix.implemented_modes(), matrix.ALL_COMPRESSIONS):
            ids.append(f"descs/{path.name}::{desc.name}[{v.id}]")
    return ids


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16])
def test_parts_are_disjoint_and_cover_the_matrix(n):
    ids = full_matrix_ids()
    assert len(ids) > 100
    parts = shard.assign(ids, n)
    assert set(parts) == set(ids)  # every item in exactly one part (a dict: no two parts)
    assert set(parts.values()) <= set(range(1, n + 1))
    sizes = [sum(1 for p in parts.values() if p == k) for k in range(1, n + 1)]
    assert max(sizes) - min(sizes) <= 1  # equal weights: counts differ by at most one


def test_assignment_does_not_depend_on_collection_order():
    ids = full_matrix_ids()
    assert shard.assign(ids, 5) == shard.assign(list(reversed(ids)), 5)


def test_durations_balance_the_work():
    # one long item and many short ones: the long one gets a part to itself
    ids = ["long"] + [f"short{i}" for i in range(8)]
    weights = {"long": 8.0, **{f"short{i}": 1.0 for i in range(8)}}
    parts = shard.assign(ids, 2, weights)
    assert [i for i in ids if parts[i] == parts["long"]] == ["long"]
    # an item the durations do not know weighs their median, and still gets a part
    parts = shard.assign(ids + ["new"], 3, weights)
    assert "new" in parts and set(parts.values()) == {1, 2, 3}


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2", ""])
def test_bad_shard_values_are_refused(text):
    with pytest.raises(shard.ShardError, match="expected K/N"):
        shard.parse(text)


def _collected(pytester, *args) -> list[str]:
    res = pytester.runpytest_subprocess("--co", "-q", "-p", "no:cacheprovider", "descs", *args)
    assert res.ret == 0, res.stdout.str() + res.stderr.str()
    return [ln for ln in res.stdout.lines if "::" in ln]


@pytest.mark.parametrize("n", [2, 3])
def test_plugin_shards_union_is_the_full_collection(pytester, n):
    (pytester.path / "descs").mkdir()
    for path in (REPO / "zdtmpy" / "descs").glob("pages*"):
        (pytester.path / "descs" / path.name).write_text(path.read_text())
    pytester.makeini("[pytest]\nzdtm_descs = descs\n")
    full = _collected(pytester)
    parts = [_collected(pytester, "--zdtm-shard", f"{k}/{n}") for k in range(1, n + 1)]
    assert len(full) > 100
    assert sorted(sum(parts, [])) == sorted(full)  # union, and no item twice


def test_plugin_refuses_a_bad_shard(pytester):
    (pytester.path / "descs").mkdir()
    res = pytester.runpytest_subprocess("--co", "--zdtm-shard", "3/2", "descs")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--zdtm-shard '3/2'" in res.stderr.str()


def test_plugin_refuses_a_bad_durations_report(pytester):
    (pytester.path / "descs").mkdir()
    bad = pytester.path / "old.json"
    bad.write_text("{]")
    res = pytester.runpytest_subprocess("--co", "--zdtm-shard", "1/2",
                                        f"--zdtm-shard-durations={bad}", "descs")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--zdtm-shard-durations: {bad}: not JSON" in res.stderr.str()


def test_plugin_balances_by_an_earlier_report(pytester):
    """A report saying one item took long puts it alone in its part."""
    import json

    (pytester.path / "descs").mkdir()
    for name in ("a", "b", "c", "d"):
        (pytester.path / "descs" / f"{name}.desc").write_text("{}")
    pytester.makeini("[pytest]\nzdtm_descs = descs\n")
    args = ("--zdtm-mode", "plain", "--zdtm-compress", "off")
    ids = _collected(pytester, *args)
    slow = ids[-1]
    report = {"format": "zdtmpy-report", "version": 1, "sessions": [], "items": [
        {"id": i, "outcome": "passed", "duration": 30.0 if i == slow else 1.0} for i in ids]}
    (pytester.path / "old.json").write_text(json.dumps(report))
    parts = [_collected(pytester, *args, "--zdtm-shard", f"{k}/2",
                        "--zdtm-shard-durations=old.json") for k in (1, 2)]
    assert [slow] in parts
    assert sorted(sum(parts, [])) == sorted(ids)
