"""`zdtmpy rebase DIR --parent PARENT_DIR`: make a full dump an incremental layer of a chain."""

from ..compress import CompressionSpec, parse_size
from ..compress.rebase import rebase_dir


def register(subparsers):
    p = subparsers.add_parser("rebase", help="rewrite a full dump as a layer on a parent dump",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--parent", required=True, metavar="PARENT_DIR",
                   help="the dump (or top layer of a chain) DIR's unchanged pages refer to")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--compress", action="store_true",
                     help="store the new layer's pages compressed per page")
    how.add_argument("--region", metavar="SIZE",
                     help="store them compressed in regions of SIZE (e.g. 64K, 256K, 4M)")
    how.add_argument("--plain", action="store_true",
                     help="store them uncompressed (default: as DIR stores them now)")
    p.add_argument("--acceleration", type=int, default=1, metavar="N",
                   help="LZ4 acceleration 1..65537 (default 1)")
    p.add_argument("--in-place", action="store_true", help="do not keep .bak copies")
    p.set_defaults(func=run)


def run(args):
    spec = None
    if args.region is not None:
        spec = CompressionSpec("region", parse_size(args.region), args.acceleration)
    elif args.compress:
        spec = CompressionSpec("page", acceleration=args.acceleration)
    elif args.plain:
        spec = CompressionSpec("off")
    print(rebase_dir(args.dir, args.parent, spec, in_place=args.in_place).message)
    return 0
