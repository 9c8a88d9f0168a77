"""`--zdtm-shard K/N`: run the K-th of N disjoint parts of the selected items.

Every shard collects the same items and computes the same assignment, so the N parts are
disjoint and their union is the whole selection, whatever the item count. Items are dealt
longest first onto the part with the least work so far (ties: the lower part number).
Without stored durations every item weighs the same and the parts differ by at most one
item; with `--zdtm-shard-durations REPORT...` (earlier `--zdtm-report` files) an item weighs
its recorded duration, and an item the reports do not know weighs their median.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable
from pathlib import Path

import pytest

from ..errors import ZdtmError


class ShardError(ZdtmError):
    """A malformed --zdtm-shard value or an unreadable durations report."""


def parse(text: str) -> tuple[int, int]:
    """'2/5' -> (2, 5): the second of five parts (1-based)."""
    k, sep, n = text.strip().partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not 1 <= int(k) <= int(n):
        raise ShardError(f"--zdtm-shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(k), int(n)


def assign(ids: list[str], n: int, weights: dict[str, float] | None = None
           ) -> dict[str, int]:
    """Every id -> its part, 1..n."""
    weights = weights or {}
    known = [w for w in weights.values() if w > 0]
    default = statistics.median(known) if known else 1.0
    order = sorted(set(ids), key=lambda i: (-(weights.get(i) or default), i))
    loads = [(0.0, part) for part in range(1, n + 1)]  # a heap of (work so far, part)
    out = {}
    for item_id in order:
        load, part = heapq.heappop(loads)
        out[item_id] = part
        heapq.heappush(loads, (load + (weights.get(item_id) or default), part))
    return out


def durations_from(paths: Iterable[str | Path]) -> dict[str, float]:
    """Item id -> seconds from earlier JSON reports (merged like shards)."""
    from .records import ReportError, load_all

    try:
        report = load_all(paths)
    except ReportError as exc:
        raise ShardError(f"--zdtm-shard-durations: {exc}") from None
    return {rid: rec.get("duration") or 0.0 for rid, rec in report.items.items()}


def select(items: list[pytest.Item], k: int, n: int, weights: dict[str, float] | None = None
           ) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, dropped) pytest items for part k of n."""
    parts = assign([it.nodeid for it in items], n, weights)
    kept = [it for it in items if parts[it.nodeid] == k]
    dropped = [it for it in items if parts[it.nodeid] != k]
    return kept, dropped


# item id -> seconds, from --zdtm-shard-durations
DURATIONS_KEY = pytest.StashKey[dict[str, float]]()


def configure(config: pytest.Config) -> None:
    """Check --zdtm-shard and read the durations reports once, at start-up: a bad value or
    report is a usage error, not a crash in the middle of collection."""
    parse(config.getoption("zdtm_shard"))
    paths = config.getoption("zdtm_shard_durations") or []
    config.stash[DURATIONS_KEY] = durations_from(paths) if paths else {}


def apply(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep this shard's items (pytest collection, after every other selection)."""
    text = config.getoption("zdtm_shard")
    if not text:
        return
    k, n = parse(text)
    kept, dropped = select(items, k, n, config.stash.get(DURATIONS_KEY, {}))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
