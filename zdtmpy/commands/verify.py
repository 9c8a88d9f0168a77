"""`zdtmpy verify DIR`: check an image directory's pages format; exit 1 naming each problem."""

import sys

from ..compress import verify_dir


def register(subparsers):
    p = subparsers.add_parser("verify", help="check the page format invariants of a dump",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--chain", action="store_true", help="verify parent layers fully too")
    p.set_defaults(func=run)


def run(args):
    problems = verify_dir(args.dir, chain=args.chain)
    for problem in problems:
        print(f"zdtmpy verify: {problem}", file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.dir}: OK")
    return 0
