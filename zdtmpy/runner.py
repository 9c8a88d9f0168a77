"""Runs one test item: skips, the test directory, the cycle, report sections, cleanup."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from . import isolation
from .criuchoice import criu_of
from .cycle import Run, RunOptions, cycle_function, prepare_workdir
from .errors import CriuNotFound
from .reporting.properties import run_properties

if TYPE_CHECKING:
    from .descriptor import Descriptor
    from .matrix import Variant

MODE_FEATURES_HINT = {
    "mem_dirty_track": "the kernel has no dirty-memory tracking (soft-dirty)",
    "uffd": "the kernel has no userfaultfd",
    "uffd-noncoop": "the kernel's userfaultfd lacks non-cooperative events",
}


__all__ = ["criu_of", "results_root", "run_item", "skip_reason"]


class CycleItem(Protocol):
    """A pytest item that runs one cycle: zdtmpy's ZdtmItem, or the corpus's item (which
    may also bring workdir_parent / workdir_name, launch and event)."""

    config: pytest.Config
    name: str
    desc: Descriptor
    variant: Variant
    run_state: Run | None
    user_properties: list[tuple[str, object]]

    @property
    def nodeid(self) -> str: ...
    def add_report_section(self, when: str, key: str, content: str) -> None: ...


def skip_reason(config: pytest.Config, desc: Descriptor, variant: Variant) -> str | None:
    """Why this item cannot run here, or None. Every reason names what is missing."""
    criu = criu_of(config)
    if isinstance(criu, CriuNotFound):
        return f"criu unavailable: {criu}"
    if desc.has("suid") and os.geteuid() != 0:
        return f"{desc.name}: flag 'suid' needs root"
    if os.geteuid() != 0:
        return "checkpoint/restore needs root (criu dumps other processes)"
    why = desc.arch_mismatch()
    if why:
        return f"{desc.name}: {why}"
    missing = desc.missing_deps()
    if missing:
        return f"{desc.name}: missing dependency {', '.join(missing)}"
    for feature in desc.features:
        if not criu.has_feature(feature):
            return f"{desc.name}: criu {criu.version_str} reports feature '{feature}' missing"
    for feature in variant.mode.features:
        if not criu.has_feature(feature):
            hint = MODE_FEATURES_HINT.get(feature, f"'criu check --feature {feature}' fails")
            return f"mode {variant.mode.name}: {hint} (criu check --feature {feature})"
    return None


def results_root(config: pytest.Config) -> Path:
    """--zdtm-results, else <rootdir>/zdtm-results; never inside the installed package
    (`pytest --pyargs zdtmpy.descs` makes the package's descs/ the rootdir): then ./"""
    opt = config.getoption("zdtm_results")
    if opt:
        return Path(opt)
    from .builtin import PACKAGE_DIR

    root = Path(config.rootpath).resolve()
    if root == PACKAGE_DIR or PACKAGE_DIR in root.parents:
        if not (PACKAGE_DIR.parent / "pyproject.toml").is_file():   # not a clone
            root = Path.cwd()
    return root / "zdtm-results"


def _dirname(item: CycleItem) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", item.name).strip("-")


def run_item(item: CycleItem) -> None:
    config = item.config
    root = results_root(config)
    criu = criu_of(config)
    if isinstance(criu, CriuNotFound):  # skip_reason() skipped such items already
        raise criu
    run = Run(
        test=item.nodeid,
        desc=item.desc,
        variant=item.variant,
        criu=criu,
        workdir=prepare_workdir(getattr(item, "workdir_parent", None) or root,
                                getattr(item, "workdir_name", None) or _dirname(item)),
        options=RunOptions(
            keep=config.getoption("zdtm_keep"),
            norst=config.getoption("zdtm_norst"),
            timeout=config.getoption("zdtm_timeout"),
            oracle=not config.getoption("zdtm_no_oracle"),
            static_dirs=tuple(Path(config.rootpath, d) for d in config.getini("zdtm_static")),
        ),
        after_dump=lambda images: config.hook.pytest_zdtm_after_dump(item=item, images=images),
        launch=getattr(item, "launch", None),  # the upstream corpus brings its own workloads
        event=getattr(item, "event", None),
    )
    item.run_state = run
    passed = False
    try:
        with isolation.exclusive_lock(root / ".excl.lock", item.desc.has("excl")):
            cycle_function(item.variant.mode)(run)
        passed = True
    finally:
        problems = run.cleanup()
        isolation.reap_orphans()
        item.user_properties.extend(run_properties(run, passed))
        if not passed:
            for att in run.attachments:
                item.add_report_section("call", att.title, att.read())
        if problems:
            item.add_report_section("teardown", "cleanup problems", "\n".join(problems))
        if passed and not run.options.keep:
            run.remove_workdir()
