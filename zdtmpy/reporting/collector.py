"""The pytest side of the JSON report: gather every item's reports, write one file.

Registered only where the run is decided: the plain pytest process, or the xdist controller,
whose reports carry the workers' user_properties.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

from . import records
from .properties import session_facts

_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 1, "failed": 2, "error": 3}


class ReportCollector:
    def __init__(self, config: pytest.Config, path: str) -> None:
        records.check_writable(path)
        self.config = config
        self.path = path
        self.started = time.time()
        self._items: dict[str, dict[str, Any]] = {}   # id -> outcome, duration, message, props

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self._items.setdefault(report.nodeid, {"outcome": "passed", "duration": 0.0,
                                                       "message": "", "props": []})
        entry["duration"] += report.duration
        entry["props"] = list(report.user_properties)
        outcome = _outcome(report)
        if _RANK[outcome] > _RANK[entry["outcome"]]:
            entry["outcome"] = outcome
            if outcome != "passed":
                entry["message"] = _message(report)

    def pytest_sessionfinish(self, session: pytest.Session,
                             exitstatus: int | pytest.ExitCode) -> None:
        from ..criuchoice import criu_of

        facts = session_facts(criu_of(self.config))
        shard = self.config.getoption("zdtm_shard")
        facts.update({
            "shard": shard,
            "items": len(self._items),
            "started": datetime.fromtimestamp(self.started, timezone.utc).isoformat(),
            "duration": round(time.time() - self.started, 3),
            "exitstatus": int(exitstatus),
        })
        report = records.Report(sessions=[facts])
        for nodeid, e in self._items.items():
            report.items[nodeid] = records.item_record(nodeid, e["outcome"], e["duration"],
                                                       e["props"], e["message"])
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        try:
            records.write(self.path, report)
        except OSError as exc:  # e.g. a full disk: say so, and do not pass the run
            if tr:
                tr.write_line(f"zdtmpy: cannot write the JSON report {self.path}: "
                              f"{exc.strerror or exc}", red=True)
            if session.exitstatus == 0:
                session.exitstatus = 1
            return
        if tr:
            tr.write_line(f"zdtmpy: JSON report ({len(report.items)} items) in {self.path}")


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return str(report.longreprtext or "")
