"""Upstream `.desc` files -> zdtmpy `Descriptor`s.

Upstream's runner `eval`s them; here they are parsed with `ast.literal_eval` only. Upstream
keys zdtmpy does not act on are kept as facts; flags zdtmpy does not know are kept in the
descriptor's flag set (so `has()` answers for them) but have no effect of their own.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .. import descriptor
from ..errors import DescriptorError

# Upstream's default for a test without a .desc, or a .desc without 'flavor'.
DEFAULT_FLAVORS = ("h", "ns", "uns")
_MAX_DESC = 64 * 1024  # a .desc is a few lines; anything bigger is not one


class DescriptorIsCode(DescriptorError):
    """The .desc is an expression upstream evaluates; zdtmpy never runs descriptor code."""


def load(path: Path | None, name: str) -> descriptor.Descriptor:
    """Descriptor for upstream test `name` (e.g. 'zdtm/static/maps00'); path may be None."""
    raw: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DescriptorError(f"{path}: cannot read: {exc.strerror}") from None
        if size > _MAX_DESC:
            raise DescriptorError(f"{path}: {size} bytes, not a test descriptor")
        if size:
            text = path.read_text(errors="replace")
            try:
                raw = descriptor._literal(text, path)
            except DescriptorError as exc:
                if "code is not allowed" in str(exc):
                    raise DescriptorIsCode(str(exc)) from None
                raise
            if not isinstance(raw, dict):
                raise DescriptorError(f"{path}: expected a dict literal, got "
                                      f"{type(raw).__name__}")
    ours = {k: v for k, v in raw.items() if k in descriptor.SCHEMA and k != "flags"}
    flags = raw.get("flags", "")
    if not isinstance(flags, str):
        raise DescriptorError(f"{path}: key 'flags' has {type(flags).__name__}; expected a "
                              "string of space-separated words")
    if isinstance(ours.get("timeout"), str) and ours["timeout"].isdigit():
        ours["timeout"] = int(ours["timeout"])  # upstream reads it with int()
    ours.setdefault("flavor", " ".join(DEFAULT_FLAVORS))
    base = descriptor.from_mapping(ours, path or Path(name + ".desc"))
    return dataclasses.replace(base, name=name, workload=name, deps=_deps(base.deps),
                               flags=frozenset(flags.split()))


def _deps(deps: tuple[str, ...]) -> tuple[str, ...]:
    """Upstream's 'a|b' alternatives: the first that exists, else the first named."""
    out = []
    for alternatives in deps:
        names = alternatives.split("|")
        out.append(next((d for d in names if os.access(d, os.F_OK)), names[0]))
    return tuple(out)
