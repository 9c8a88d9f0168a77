"""Third-party pytest plugins that cost time in sessions that never use them.

hypothesis' pytest plugin (installed with zdtmpy's `test` extra) imports the whole of
hypothesis in its end-of-session summary even when no test used it: 1.3-1.5 CPU seconds in
every process, i.e. in the controller and in each xdist worker of a `pytest -n 2` run of the
built-in matrix (measured; about a quarter of that run's wall time). When nothing in the
session imported hypothesis and no report carried its data, its summary has nothing to say:
the plugin is unregistered before the summary runs.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

HYPOTHESIS_PLUGIN = "hypothesispytest"
_REPORT_KEYS = ("_hypothesis_stats", "_hypothesis_failing_examples")


class IdleHypothesis:
    """Registered only when hypothesis' plugin is; see the module docstring."""

    def __init__(self) -> None:
        self.used = False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # an xdist controller never imports hypothesis: its workers' reports tell
        if not self.used and any(k in report.__dict__ for k in _REPORT_KEYS):
            self.used = True

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # before the terminal reporter calls pytest_terminal_summary (after this hook)
        if self.used or "hypothesis" in sys.modules:
            return
        pm = session.config.pluginmanager
        plugin: Any = pm.get_plugin(HYPOTHESIS_PLUGIN)
        if plugin is not None:
            pm.unregister(plugin)


def register(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin(HYPOTHESIS_PLUGIN):
        config.pluginmanager.register(IdleHypothesis(), "zdtmpy-idle-hypothesis")
