"""`zdtmpy criu`: which criu zdtmpy would test, its version and the features modes need."""

from __future__ import annotations

import argparse
import platform
from typing import TYPE_CHECKING

from ..criu import find_criu
from ..matrix import MODES

if TYPE_CHECKING:
    from . import Subparsers

FEATURES = sorted({f for m in MODES.values() for f in m.features} | {"compress"})


def register(sub: Subparsers) -> None:
    p = sub.add_parser("criu", help="show the criu zdtmpy would use and its features")
    p.add_argument("--criu-bin", default=None, help="criu binary to probe")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    criu = find_criu(args.criu_bin)  # CriuNotFound is a ZdtmError: cli prints it
    print(f"criu {criu.version_str} at {criu.path}")
    print(f"kernel {platform.release()} {platform.machine()}")
    for name in FEATURES:
        state = "yes" if criu.has_feature(name) else "no"
        print(f"  feature {name:<16} {state}")
    return 0
