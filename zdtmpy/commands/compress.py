"""`zdtmpy compress DIR`: compress a dump's pages in place (originals kept as .bak)."""

from ..compress import CompressionSpec, compress_dir, parse_size


def register(subparsers):
    p = subparsers.add_parser("compress", help="compress the pages of an image directory",
                              description=__doc__)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--region", metavar="SIZE",
                   help="region mode with blocks of SIZE (e.g. 64K, 256K, 4M); "
                        "default: per-page mode")
    p.add_argument("--acceleration", type=int, default=1, metavar="N",
                   help="LZ4 acceleration 1..65537 (default 1)")
    p.add_argument("--in-place", action="store_true", help="do not keep .bak copies")
    p.set_defaults(func=run)


def run(args):
    if args.region is not None:
        spec = CompressionSpec("region", parse_size(args.region), args.acceleration)
    else:
        spec = CompressionSpec("page", acceleration=args.acceleration)
    print(compress_dir(args.dir, spec, in_place=args.in_place).message)
    return 0
