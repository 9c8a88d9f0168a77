"""The all-skipped check: with --zdtm-require-criu, a run whose real-criu tests all skipped
fails. A plugin object registered per config holds the counts (no module state)."""

from __future__ import annotations

import pytest


class CriuOutcomes:
    """Counts real-criu test outcomes seen by this process (the xdist controller sees all)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "criu" not in report.keywords:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not session.config.getoption("zdtm_require_criu"):
            return
        if hasattr(session.config, "workerinput"):
            return  # the controller decides
        total = sum(self.counts.values())
        if total and not (self.counts.get("passed") or self.counts.get("failed")):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            tr = session.config.pluginmanager.get_plugin("terminalreporter")
            if tr:
                tr.write_line(f"zdtmpy: all {total} real-criu tests were skipped "
                              "(--zdtm-require-criu): failing the run", red=True)
