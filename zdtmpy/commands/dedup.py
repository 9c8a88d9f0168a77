"""`zdtmpy dedup DIR`: drop from DIR's parent layers every page DIR no longer reads from them
(any layer format; only DIR stays restorable, as with `criu dedup`)."""

from ..compress.dedup import dedup_chain


def register(subparsers):
    p = subparsers.add_parser("dedup", help="drop pages a child replaced from parent layers",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR", help="the top layer of a parent chain")
    p.add_argument("--in-place", action="store_true",
                   help="do not keep .bak copies (without it nothing is freed until they go)")
    p.set_defaults(func=run)


def run(args):
    print(dedup_chain(args.dir, in_place=args.in_place).message)
    return 0
