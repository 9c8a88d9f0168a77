"""`zdtmpy compress DIR`: compress a dump's pages in place (originals kept as .bak)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..codec.options import add_options, spec_from_args
from ..compress import compress_dir

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("compress", help="compress the pages of an image directory",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    add_options(p, default="page")
    p.add_argument("--in-place", action="store_true", help="do not keep .bak copies")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    assert spec is not None   # the default is "page"
    print(compress_dir(args.dir, spec, in_place=args.in_place).message)
    return 0
