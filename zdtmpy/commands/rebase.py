"""`zdtmpy rebase DIR --parent PARENT_DIR`: make a full dump an incremental layer of a chain."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..codec.options import add_options, spec_from_args
from ..compress.rebase import rebase_dir

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("rebase", help="rewrite a full dump as a layer on a parent dump",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--parent", required=True, metavar="PARENT_DIR",
                   help="the dump (or top layer of a chain) DIR's unchanged pages refer to")
    add_options(p, default=None, what="the new layer's pages")
    p.add_argument("--plain", action="store_const", dest="compress", const="off",
                   help="store them uncompressed (= --compress off)")
    p.add_argument("--in-place", action="store_true", help="do not keep .bak copies")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(rebase_dir(args.dir, args.parent, spec_from_args(args), in_place=args.in_place).message)
    return 0
