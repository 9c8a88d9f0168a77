"""`zdtmpy show DIR`: per pagemap, pages and how they are stored."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..compress.stats import pagemap_stats
from ..images import ImageSet

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("show", help="show how the pages of a dump are stored",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    iset = ImageSet(args.dir)
    inv = iset.inventory
    mode = {0: "off", 1: "per-page", 2: "region"}.get(inv.compress, f"unknown({inv.compress})")
    extra = f" region {iset.compress_region_size} bytes" if inv.compress == 2 else ""
    parent = f", parent {iset.parent_link}" if iset.parent_link else ""
    print(f"{os.path.abspath(args.dir)}: img_version {inv.img_version}, compress {mode}"
          f"{extra}{parent}")
    header = (f"{'pagemap':<28} {'pages':>8} {'present':>8} {'zero':>7} {'raw':>7} "
              f"{'lz4':>7} {'before':>12} {'after':>12} {'ratio':>7}")
    print(header)
    for pm in iset.pagemaps.values():
        s = pagemap_stats(pm)
        ratio = f"{s.before / s.after:.2f}" if s.after else "-"
        print(f"{pm.name:<28} {s.pages:>8} {s.present_pages:>8} {s.zero:>7} {s.raw:>7} "
              f"{s.lz4:>7} {s.before:>12} {s.after:>12} {ratio:>7}")
    return 0
