"""Benchmarks behind `zdtmpy bench KIND`: one module per kind (see zdtmpy/commands/bench.py).

Shared here: reading per-item stage timings out of a pytest junit XML file, and small
statistics helpers. The plugin records each item's stage timings in `item.user_properties`
as ("zdtm_stage_<stage>_s", seconds) (zdtmpy.reporting.properties); pytest's junitxml writes
every user property of a test as `<property name=... value=str(value)>` (also under xdist,
whose reports carry user_properties), so a benchmark needs no conftest and no hook of its own.
"""

from __future__ import annotations

import ast
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZdtmError
from ..reporting.properties import STAGE_PREFIX, STAGE_SUFFIX

# one measurement (or a summary of them) as a bench prints it and writes it with --json
Record = dict[str, Any]


class BenchError(ZdtmError):
    """A benchmark could not run or could not read its own results."""


@dataclass
class JunitCase:
    """One <testcase> of a junit XML report."""

    classname: str
    name: str
    time: float  # pytest: setup + call + teardown durations of the item
    outcome: str  # passed, failed, error, skipped
    message: str = ""
    properties: dict[str, object] = field(default_factory=dict)

    @property
    def timings(self) -> dict[str, float]:
        """The item's {stage: seconds}, or {} when the plugin recorded none."""
        return {name[len(STAGE_PREFIX):-len(STAGE_SUFFIX)]: value
                for name, value in self.properties.items()
                if name.startswith(STAGE_PREFIX) and name.endswith(STAGE_SUFFIX)
                and isinstance(value, (int, float)) and not isinstance(value, bool)}


def _property_value(text: str) -> object:
    # str() of a dict of floats is a Python literal: read it back without eval.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_junit(path: str | Path) -> list[JunitCase]:
    """Every testcase of a junit XML file (any junit_family), with parsed properties."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise BenchError(f"{path}: cannot read the junit report: {exc.strerror}") from None
    except ET.ParseError as exc:
        raise BenchError(f"{path}: not a junit XML report ({exc})") from None
    cases = []
    for tc in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = tc.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                # pytest cuts long messages short and puts the whole report in the text
                message = node.get("message", "")
                if node.text and ("full report in element text" in message or not message):
                    message = node.text
                break
        props = {}
        for prop in tc.iter("property"):
            props[prop.get("name", "")] = _property_value(prop.get("value", ""))
        try:
            time = float(tc.get("time", "0") or 0)
        except ValueError:
            raise BenchError(f"{path}: testcase {tc.get('name')!r} has a non-numeric "
                             f"time {tc.get('time')!r}") from None
        cases.append(JunitCase(tc.get("classname", ""), tc.get("name", ""), time, outcome,
                               message, props))
    return cases


def median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(seconds: float | None, width: int = 7) -> str:
    return f"{seconds:{width}.3f}" if seconds is not None else " " * (width - 1) + "-"
