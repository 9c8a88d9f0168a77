"""`zdtmpy report FILE... [--baseline FILE...]`: summarise JSON reports, compare two runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..reporting import records, summary

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="summarise --zdtm-report files (shards merge); compare with a baseline",
        description=__doc__)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="JSON reports of one run (e.g. one per shard)")
    p.add_argument("--baseline", action="append", default=[], metavar="FILE",
                   help="reports of the run to compare with (repeatable: its shards)")
    p.add_argument("--slower", type=float, default=50.0, metavar="PERCENT",
                   help="report a stage slower than the baseline by more than this "
                        "(default 50)")
    p.add_argument("--min-delta", type=float, default=0.2, metavar="SECONDS",
                   help="... and by more than this many seconds (default 0.2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 1 when a test that passed in the baseline now fails."""
    report = records.load_all(args.files)
    print(summary.describe(report))
    for line in summary.table(report):
        print(line)
    if not args.baseline:
        return 0
    base = records.load_all(args.baseline)
    print(f"\nbaseline: {summary.describe(base)}")
    cmp = summary.compare(base, report, args.slower, args.min_delta)
    for line in summary.comparison_lines(cmp, args.slower, args.min_delta):
        print(line)
    if cmp.regressions:
        print(f"{len(cmp.regressions)} test(s) passed in the baseline and fail now")
        return 1
    return 0
