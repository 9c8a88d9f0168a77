"""`zdtmpy decompress DIR`: turn compressed pages back into CRIU's plain layout."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..compress import decompress_dir

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("decompress", help="decompress the pages of an image directory",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--in-place", action="store_true", help="do not keep .bak copies")
    p.add_argument("--chain", action="store_true",
                   help="also decompress every parent layer (the chain becomes version 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(decompress_dir(args.dir, in_place=args.in_place, chain=args.chain).message)
    return 0
