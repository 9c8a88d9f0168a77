"""`zdtmpy bench KIND`: benchmarks, one subcommand per kind.

Each kind is a module `zdtmpy.bench.<module>` with `HELP` (one line), `add_arguments(parser)`
and `run(args) -> int`. Adding a kind = one module + one line in KINDS.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Subparsers

# kind -> module under zdtmpy.bench
KINDS = {
    "cycle": "cycle",
    "compress": "compress",
    "page-server": "pageserver",
    "stream": "stream",
    "corpus": "corpus",
    "rpc": "rpc",
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"zdtmpy.bench.{KINDS[name]}")


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure zdtmpy (and upstream zdtm.py) on this machine",
        description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND")
    kinds.required = True
    for name, module in KINDS.items():
        try:
            mod = _module(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"zdtmpy.bench.{module}":
                raise
            continue  # kind not shipped in this build
        sub = kinds.add_parser(name, help=mod.HELP,
                               description=(mod.__doc__ or "").split("\n\n")[0])
        mod.add_arguments(sub)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return int(_module(args.bench_kind).run(args))
