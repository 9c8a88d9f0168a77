"""The compression options of every `zdtmpy` command, as one grammar:

    --compress [SETTING]   off, page (when given alone), region, region64k, ...
    --region SIZE          region layout with blocks of SIZE (64K, 256K, 4M)
    --acceleration N       the algorithm's speed knob (LZ4: 1..65537)

`spec_from_args` turns them into the one `Compression` value; `to_argv` writes a value
back as options (a cycle starting a `zdtmpy` process uses it).
"""

from __future__ import annotations

import argparse

from ..errors import ZdtmError
from .spec import ACCELERATION_MAX, Compression, parse_setting, parse_size


def add_options(parser: argparse.ArgumentParser, default: str | None = "off",
                what: str = "pages") -> None:
    """Add the three options; `default` is the setting when none is given (None: the
    command decides, e.g. keeping what a directory has)."""
    parser.add_argument("--compress", nargs="?", const="page", default=None,
                        metavar="SETTING",
                        help=f"compress {what}: off, page (the default when given alone), "
                             f"region, region64k, ... (default: {default or 'unchanged'})")
    parser.add_argument("--region", metavar="SIZE",
                        help="region layout with blocks of SIZE (e.g. 64K, 256K, 4M)")
    parser.add_argument("--acceleration", type=int, default=1, metavar="N",
                        help=f"LZ4 acceleration 1..{ACCELERATION_MAX} (default 1)")
    parser.set_defaults(compress_default=default)


def spec_from_args(args: argparse.Namespace) -> Compression | None:
    """The Compression the options ask for (None when nothing was asked and the command's
    default is None). Raises ZdtmError on a bad or contradictory setting."""
    setting = args.compress if args.compress is not None else args.compress_default
    if args.region is not None:
        if args.compress == "off":
            raise ZdtmError("--region contradicts --compress off")
        return Compression("region", parse_size(args.region), args.acceleration)
    if setting is None:
        return None
    return parse_setting(setting, args.acceleration)


def to_argv(compression: Compression) -> list[str]:
    """Options asking for `compression` (the inverse of spec_from_args)."""
    argv = ["--compress", compression.layout, "--acceleration", str(compression.acceleration)]
    if compression.is_region:
        argv += ["--region", str(compression.region_size)]
    return argv
