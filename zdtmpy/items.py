"""pytest collection nodes: a descriptor file and its test items (test x mode x compression)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import descriptor, matrix
from .errors import DescriptorError, ZdtmError

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from .cycle import Run


class DescriptorFile(pytest.File):
    """One `.desc` / `.yaml` file: yields one item per valid matrix cell."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            desc = descriptor.load(self.path)
        except DescriptorError as exc:
            # An item, not a collection error: pytest would stop the whole run on one.
            yield BrokenDescriptorItem.from_parent(self, name=f"{self.path.stem}[descriptor]",
                                                   error=str(exc))
            return
        sel = self.config.stash[SELECTION_KEY]
        try:
            cells = matrix.variants(desc, sel.modes, sel.compressions, sel.acceleration,
                                    sel.apis)
        except ZdtmError as exc:
            yield BrokenDescriptorItem.from_parent(self, name=f"{desc.name}[descriptor]",
                                                   error=f"{self.path}: {exc}")
            return
        for variant in cells:
            yield ZdtmItem.from_parent(self, name=f"{desc.name}[{variant.id}]", desc=desc,
                                       variant=variant)


class BrokenDescriptorItem(pytest.Item):
    def __init__(self, *, error: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.error = error

    def runtest(self) -> None:
        raise DescriptorError(self.error)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException],
                     style: Any = None) -> str | TerminalRepr:
        return f"malformed descriptor: {excinfo.value}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


class ZdtmItem(pytest.Item):
    """One real checkpoint/restore cycle."""

    def __init__(self, *, desc: descriptor.Descriptor, variant: matrix.Variant,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.desc = desc
        self.variant = variant
        self.run_state: Run | None = None
        self.add_marker("criu")
        if desc.has("excl"):
            self.add_marker("zdtm_excl")

    def setup(self) -> None:
        from .runner import skip_reason

        reason = skip_reason(self.config, self.desc, self.variant)
        if reason:
            # A reason that names the test is reported at its descriptor; one about criu or
            # a mode is the same for every test and -rs folds it into one line.
            at_descriptor = reason.startswith(f"{self.desc.name}:")
            raise pytest.skip.Exception(reason, _use_item_location=at_descriptor)

    def runtest(self) -> None:
        from .runner import run_item

        run_item(self)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException],
                     style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, ZdtmError):
            text = str(excinfo.value)
            if self.run_state is not None:
                text += f"\n\ntest directory kept: {self.run_state.workdir}"
            return text
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.name} ({self.variant.mode.description})"


class Selection:
    """What the command line selected: modes, compressions, acceleration, criu APIs."""

    def __init__(self, modes: Sequence[str], compressions: Sequence[str],
                 acceleration: int | None, apis: Sequence[str] = ("cli",)) -> None:
        from .criuapi import check_api

        for m in modes:
            matrix.mode(m)
        for a in apis:
            check_api(a)
        self.modes = tuple(modes)
        # parsed once here: the values travel unchanged to the inventory
        self.compressions = tuple(matrix.compression(c) for c in compressions)
        self.acceleration = acceleration
        self.apis = tuple(apis)


SELECTION_KEY = pytest.StashKey[Selection]()


def is_descriptor(path: Path, config: pytest.Config) -> bool:
    if path.suffix not in (".desc", ".yaml", ".yml"):
        return False
    if path.suffix == ".desc":
        return True
    roots = [Path(config.rootpath, d).resolve() for d in config.getini("zdtm_descs")]
    here = path.resolve()
    return any(root == here.parent or root in here.parents for root in roots) or (
        os.path.basename(os.path.dirname(here)) == "descs"
    )


def longest_first(items: list[pytest.Item], durations: dict[str, float]) -> None:
    """Reorder the zdtmpy items in place, longest expected first (other items keep their
    places). xdist deals items out in collection order (a few at a time with --dist load;
    in shares with worksteal, idle workers then taking the tail of the busiest queue): with
    the long ones first, the short ones fill the end and both workers finish together. Expected: the
    duration an earlier report recorded (--zdtm-shard-durations), else a compressed variant
    (it converts images: about twice an uncompressed one, measured) before an uncompressed
    one. A stable sort: every worker computes the same order."""
    import statistics

    slots = [i for i, it in enumerate(items) if isinstance(it, ZdtmItem)]
    known = [d for d in durations.values() if d > 0]
    default = statistics.median(known) if known else 0.0

    def cost(it: ZdtmItem) -> float:
        if known:
            return durations.get(it.nodeid) or default
        return 2.0 if it.variant.compression.enabled or it.variant.layers else 1.0

    ordered = sorted((it for it in items if isinstance(it, ZdtmItem)), key=cost, reverse=True)
    for i, it in zip(slots, ordered):
        items[i] = it
