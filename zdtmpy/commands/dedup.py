"""`zdtmpy dedup DIR`: drop from DIR's parent layers every page DIR no longer reads from them
(any layer format; only DIR stays restorable, as with `criu dedup`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..compress.dedup import dedup_chain

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("dedup", help="drop pages a child replaced from parent layers",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR", help="the top layer of a parent chain")
    p.add_argument("--in-place", action="store_true",
                   help="do not keep .bak copies (without it nothing is freed until they go)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(dedup_chain(args.dir, in_place=args.in_place).message)
    return 0
