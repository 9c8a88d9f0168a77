"""The corpus in a pytest session: suites from the options, items added after collection,
the ns roots torn down, system state restored and the summary printed at the end."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from .. import sysstate
from ..errors import ZdtmError
from .report import Summary
from .suite import Suite, resolve

if TYPE_CHECKING:
    from _pytest.terminal import TerminalReporter

    from ..registry import Registry
    from .sysprep import Prepared

SUITES_KEY = pytest.StashKey[list[tuple[Suite, str]]]()   # (suite, flavor) to collect
DEFAULT_FLAVORS = ("h", "ns")


def configure(config: pytest.Config) -> None:
    specs = list(config.getoption("zdtm_suite") or []) + list(config.getini("zdtm_suites"))
    flavors = tuple(config.getoption("zdtm_flavor") or DEFAULT_FLAVORS)
    for f in flavors:
        if f not in ("h", "ns", "uns"):
            raise pytest.UsageError(f"--zdtm-flavor {f}: expected h, ns or uns")
    suites: list[Suite] = []
    if specs:
        from ..runner import criu_of

        found = criu_of(config)
        path = getattr(found, "path", None)
        for spec in dict.fromkeys(specs):
            try:
                suites.append(resolve(spec, path))
            except ZdtmError as exc:
                raise pytest.UsageError(f"zdtmpy: {exc}") from None
    config.addinivalue_line("markers", "zdtm_corpus: a test of CRIU's own ZDTM corpus")
    config.stash[SUITES_KEY] = [(s, f) for s in suites for f in flavors]
    config.pluginmanager.register(CorpusSession(config), "zdtmpy-corpus")


def _leave(registry: Registry) -> list[str]:
    """A session without corpus items leaves; the last one out puts back what the first
    one found (sysctls; a corpus setup whose sessions all ended before this one)."""
    with registry.locked() as shared:
        registry.leave()
        if not shared.alone:
            return []
        if not shared.state:
            return []
        from .sysprep import put_back

        return put_back(shared.state)


class CorpusSession:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.summary = Summary()
        self.controller = not hasattr(config, "workerinput")
        # sysctls are the registry's (what the first session found), not this snapshot's
        self.snapshot = sysstate.Snapshot.take(ours={}) if self.controller else None
        self.corpus = bool(config.stash[SUITES_KEY])
        self.ran_criu = False  # only a session that ran real criu puts cgroups back
        self.prepared: Prepared | None = None
        self.registry: Registry | None = None
        if self.controller and os.geteuid() == 0:
            from ..registry import Registry

            self.registry = Registry()
            with self.registry.locked() as shared:
                if self.corpus:
                    from .sysprep import Prepared

                    self.prepared = Prepared(self.registry)
                    self.prepared.prepare(shared)
                self.registry.join()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        if not config.stash[SUITES_KEY]:
            return  # no corpus: its nodes are not even imported (every xdist worker starts)
        from .nodes import SuiteFlavor

        for suite, flavor in config.stash[SUITES_KEY]:
            name = f"{suite.label}[{flavor}]"
            node = SuiteFlavor.from_parent(session, name=name, nodeid=name, suite=suite,
                                           flavor=flavor)
            try:
                items.extend(node.collect())
            except ZdtmError as exc:
                raise pytest.UsageError(f"zdtmpy: {exc}") from None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.summary.add(report)
        if report.when == "call" and "criu" in report.keywords:
            self.ran_criu = True

    def pytest_sessionfinish(self, session: pytest.Session,
                             exitstatus: int | pytest.ExitCode) -> None:
        """With --zdtm-require-criu, a corpus whose items all skipped fails the run."""
        if not self.controller or not session.config.getoption("zdtm_require_criu"):
            return
        total, ran = self.summary.totals()
        if total and not ran:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            tr = session.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"zdtmpy: all {total} upstream corpus tests were skipped "
                              "(--zdtm-require-criu): failing the run", red=True)

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        lines = self.summary.lines()
        if lines:
            terminalreporter.section("zdtmpy corpus")
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        ns = None
        if self.corpus:  # only corpus items make ns roots
            from .nodes import NS_ROOT_KEY

            ns = config.stash.get(NS_ROOT_KEY, None)
        problems = ns.teardown() if ns is not None else []
        if self.prepared is not None:
            problems += self.prepared.undo()
        elif self.registry is not None:
            problems += _leave(self.registry)
        if self.snapshot is not None and (self.ran_criu or self.prepared is not None):
            # cgroup hierarchies only after upstream tests ran here: another session on this
            # machine may own one that appeared meanwhile.
            problems += self.snapshot.restore(cgroups=self.corpus)
        if problems and os.environ.get("ZDTMPY_SYSSTATE_QUIET") != "1":
            tr = config.pluginmanager.get_plugin("terminalreporter")
            for line in problems:
                if tr is not None:
                    tr.write_line(f"zdtmpy: {line}")
