"""`zdtmpy verify DIR`: check an image directory's pages format; exit 1 naming each problem."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..compress.chain import verify_chain

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("verify", help="check the page format invariants of a dump",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--chain", action="store_true", help="verify parent layers fully too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The layer's links and version rule are always checked against its parents.
    problems = verify_chain(args.dir, full=args.chain)
    for problem in problems:
        print(f"zdtmpy verify: {problem}", file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.dir}: OK")
    return 0
