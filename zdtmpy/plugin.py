"""pytest plugin: options, collection of descriptors, the report header. Hooks only.

Loaded through the `pytest11` entry point, or with `-p zdtmpy.plugin` when plugin
autoloading is off. Importing it needs neither a C compiler nor criu.
"""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path
from typing import Any, Protocol

import pytest

from . import isolation, matrix
from .reporting import properties, shard


class WorkerNode(Protocol):
    """What the xdist hooks here use of xdist's WorkerController."""

    config: pytest.Config
    workerinput: dict[str, Any]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("zdtmpy", "zdtmpy: CRIU checkpoint/restore tests")
    g.addoption("--criu-bin", default=None, metavar="PATH",
                help="criu binary to test (default: $ZDTM_CRIU, PATH, the build cache)")
    g.addoption("--zdtm-mode", action="append", default=None, metavar="MODE",
                help=f"mode(s) to run (repeatable): {', '.join(matrix.MODES)}; default: all")
    g.addoption("--zdtm-compress", action="append", default=None, metavar="SETTING",
                help="compression setting(s) (repeatable): off, page, region[SIZE] "
                     f"(e.g. region64k); default: {', '.join(matrix.ALL_COMPRESSIONS)}")
    g.addoption("--zdtm-acceleration", type=int, default=None, metavar="N",
                help="LZ4 acceleration 1..65537 for compressed variants (default 1)")
    g.addoption("--zdtm-criu-api", action="append", default=None, metavar="API",
                choices=("cli", "rpc"),
                help="drive criu by its command line (cli, the default) or over RPC through "
                     "criu swrk (rpc); repeatable")
    g.addoption("--zdtm-keep", action="store_true",
                help="keep images and logs of passing tests too")
    g.addoption("--zdtm-results", default=None, metavar="DIR",
                help="where test directories go (default: <rootdir>/zdtm-results)")
    g.addoption("--zdtm-norst", action="store_true",
                help="dump with --leave-running and skip the restore (tests flagged reqrst "
                     "still restore)")
    g.addoption("--zdtm-no-oracle", action="store_true",
                help="do not compare image pages with the workload's manifest")
    g.addoption("--zdtm-timeout", type=float, default=30.0, metavar="SECONDS",
                help="base timeout of one stage (criu steps get twice this)")
    g.addoption("--zdtm-require-criu", action="store_true",
                default=bool(os.environ.get("ZDTM_REQUIRE_CRIU")),
                help="error out instead of skipping when no usable criu is found "
                     "($ZDTM_REQUIRE_CRIU)")
    g.addoption("--zdtm-report", default=None, metavar="FILE",
                help="write a JSON report: one record per item (outcome, criu, kernel, mode, "
                     "compression, stage times, image sizes); read with `zdtmpy report`")
    g.addoption("--zdtm-shard", default=None, metavar="K/N",
                help="run only part K of N disjoint parts of the selected items")
    g.addoption("--zdtm-shard-durations", action="append", default=None, metavar="REPORT",
                help="balance --zdtm-shard by the durations in earlier --zdtm-report files")
    g.addoption("--zdtm-suite", action="append", default=None, metavar="PATH",
                help="also run CRIU's own ZDTM corpus from a criu source tree or its "
                     "test/zdtm (repeatable); 'criu' = the tree the criu under test was "
                     "built in")
    g.addoption("--zdtm-flavor", action="append", default=None, metavar="FLAVOR",
                help="upstream corpus flavors (repeatable): h, ns; default: both")
    g.addoption("--zdtm-corpus-tests", action="append", default=None, metavar="NAMES",
                help="only these upstream tests (space-separated short names, e.g. "
                     "'maps00 pipe00'; 'slice' = a representative slice); repeatable")
    g.addoption("--zdtm-as-root", action="store_true",
                help="run upstream tests not flagged suid as root instead of upstream's "
                     "uid 18943 (needed where root lacks CAP_SYS_RESOURCE)")
    parser.addini("zdtm_suites", type="args", default=[],
                  help="upstream ZDTM corpora to run, as --zdtm-suite")
    parser.addini("zdtm_descs", type="args", default=["descs"],
                  help="directories holding test descriptors, relative to rootdir")
    parser.addini("zdtm_static", type="args", default=[],
                  help="directories holding C workloads (<name>.c), relative to rootdir; "
                       "zdtmpy's built-in workloads (zdtmpy/workloads) are searched last")


def pytest_configure(config: pytest.Config) -> None:
    from .errors import ZdtmError
    from .items import SELECTION_KEY, Selection

    config.addinivalue_line("markers", "criu: needs a working criu binary")
    config.addinivalue_line("markers", "zdtm_excl: never runs beside another test")
    try:
        config.stash[SELECTION_KEY] = Selection(
            config.getoption("zdtm_mode") or matrix.implemented_modes(),
            config.getoption("zdtm_compress") or matrix.ALL_COMPRESSIONS,
            config.getoption("zdtm_acceleration"),
            config.getoption("zdtm_criu_api") or ("cli",),
        )
        if config.getoption("zdtm_shard"):
            shard.configure(config)
        if config.getoption("zdtm_report") and not hasattr(config, "workerinput"):
            from .reporting.collector import ReportCollector

            config.pluginmanager.register(
                ReportCollector(config, config.getoption("zdtm_report")), "zdtmpy-report")
    except ZdtmError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("help", False):
        return
    from .outcomes import CriuOutcomes

    config.pluginmanager.register(CriuOutcomes(), "zdtmpy-criu-outcomes")
    from . import idleplugins

    idleplugins.register(config)
    isolation.become_subreaper()
    _share_cores(config)
    _probe_criu(config)
    _guard_start(config)
    from .corpus import session as corpus_session

    corpus_session.configure(config)


def _guard_start(config: pytest.Config) -> None:
    """Kill what crashed sessions left (controller only), make SIGTERM unwind like Ctrl-C."""
    from . import session_guard

    session_guard.begin()
    if not hasattr(config, "workerinput"):
        config.stash[SWEPT_KEY] = session_guard.sweep_report()


SWEPT_KEY = pytest.StashKey[list[str]]()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: WorkerNode, error: object) -> None:
    """An xdist worker ended (perhaps killed): its workloads and criu now have no owner."""
    from . import session_guard

    lines = session_guard.sweep_report()
    tr = node.config.pluginmanager.get_plugin("terminalreporter")
    if lines and tr:
        tr.write_line("\n".join(lines), yellow=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    from . import session_guard

    if config.getoption("help", False):
        return
    lines = session_guard.finish(controller=not hasattr(config, "workerinput"))
    if lines:
        import sys

        print("\n".join(lines), file=sys.stderr)


def _share_cores(config: pytest.Config) -> None:
    """In an xdist worker, give the codec's thread pool its share of the cores only."""
    count = getattr(config, "workerinput", {}).get("workercount")
    if count:
        from .compress.pipeline import share_cores

        share_cores(int(count))


def _probe_criu(config: pytest.Config) -> None:
    """Find criu once. An explicit --criu-bin that does not work is an error for the run."""
    from .criuchoice import criu_of
    from .errors import CriuNotFound

    found = criu_of(config)
    if isinstance(found, CriuNotFound):
        explicit = config.getoption("criu_bin") or os.environ.get("ZDTM_CRIU")
        if explicit or config.getoption("zdtm_require_criu"):
            raise pytest.UsageError(f"zdtmpy: {found}")
    elif not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        # An xdist controller: ask the features that decide skips now, beside its own
        # start-up and the first worker's, not in pytest_configure_node, which every
        # worker's start waits for.
        asking = threading.Thread(target=properties.criu_features, args=(found,),
                                  name="zdtmpy-criu-features", daemon=True)
        asking.start()
        config.stash[FEATURES_KEY] = asking


FEATURES_KEY = pytest.StashKey[threading.Thread]()


def _features_asked(config: pytest.Config) -> None:
    """Wait for the controller's early feature probe (if any), so nobody asks twice."""
    asking = config.stash.get(FEATURES_KEY, None)
    if asking is not None:
        asking.join()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: WorkerNode) -> None:
    """xdist: each worker reuses the controller's criu, probed once, with the features that
    decide skips already asked (through workerinput)."""
    from .criuchoice import criu_of

    found = criu_of(node.config)
    if not isinstance(found, Exception):   # a Criu, not the CriuNotFound
        _features_asked(node.config)
        properties.criu_features(found)
        node.workerinput["zdtmpy_criu"] = found.handoff()


def pytest_report_header(config: pytest.Config) -> list[str]:
    from .criuchoice import criu_of

    found = criu_of(config)
    _features_asked(config)
    kernel = f"kernel {platform.release()} {platform.machine()}"
    swept = config.stash.get(SWEPT_KEY, [])
    if not isinstance(found, Exception):   # a Criu, not the CriuNotFound
        return [f"zdtmpy: criu {found.version_str} at {found.path}; {kernel}",
                properties.header_line(found), *swept]
    return [f"zdtmpy: NO usable criu ({found}); {kernel}", *swept]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from .items import DescriptorFile, is_descriptor

    if is_descriptor(file_path, parent.config):
        return DescriptorFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`noauto` tests run only when selected by name (file argument or -k); then
    --zdtm-shard keeps its part of what every other selection left."""
    from .items import ZdtmItem

    named = " ".join(config.args) + " " + (config.getoption("keyword") or "")
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        if (isinstance(item, ZdtmItem) and item.desc.has("noauto")
                and item.desc.name not in named and not getattr(item, "corpus", False)):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    shard.apply(config, items)
    if hasattr(config, "workerinput"):  # xdist: keep both workers busy to the end
        from .items import longest_first

        longest_first(items, config.stash.get(shard.DURATIONS_KEY, {}))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Properties known before the run, so skipped items carry them too."""
    from .criuchoice import criu_of
    from .items import ZdtmItem

    if isinstance(item, ZdtmItem):
        item.user_properties.extend(properties.static_properties(item, criu_of(item.config)))


