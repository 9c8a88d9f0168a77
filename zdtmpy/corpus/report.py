"""End-of-session summary of the upstream corpus: one line per suite, flavor and mode."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

# '<suite>[<flavor>]::zdtm/<dir>/<test>[<mode>-<compression>]'
_NODEID = re.compile(r"^(?P<suite>[^:\[]+)\[(?P<flavor>\w+)\]::zdtm/[^\[]+\[(?P<variant>[^\]]+)\]$")
MARKER = "zdtm_corpus"


class Summary:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
        self.skips: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)

    def add(self, report: pytest.TestReport) -> None:
        if MARKER not in report.keywords:
            return
        m = _NODEID.match(report.nodeid)
        if not m:
            return
        key = (m["suite"], m["flavor"], _mode(m["variant"]))
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.counts[key][report.outcome] += 1
            if report.outcome == "skipped":
                self.skips[key][_category(report)] += 1

    def totals(self) -> tuple[int, int]:
        """(items counted, items that passed or failed)."""
        total = sum(sum(c.values()) for c in self.counts.values())
        ran = sum(c["passed"] + c["failed"] for c in self.counts.values())
        return total, ran

    def lines(self) -> list[str]:
        out = []
        for key in sorted(self.counts):
            c, s = self.counts[key], self.skips[key]
            why = ", ".join(f"{n} {k}" for k, n in s.most_common())
            out.append(f"corpus {key[0]} flavor {key[1]} mode {key[2]}: {c['passed']} passed, "
                       f"{c['failed']} failed, {c['skipped']} skipped"
                       + (f" ({why})" if why else ""))
        return out


def _mode(variant: str) -> str:
    from ..matrix import MODES

    for name in sorted(MODES, key=len, reverse=True):
        if variant.startswith(name + "-"):
            return name
    return variant


def _category(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    text = text.removeprefix("Skipped: ")
    head = text.split(":", 1)[0].strip()
    return head if head and len(head) <= 20 and " " not in head else "other"
