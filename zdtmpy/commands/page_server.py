"""`zdtmpy page-server`: receive a `criu dump --page-server` into DIR (compressing on the fly),
or with --lazy serve `criu lazy-pages --page-server` from DIR. Prints the bound port."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

from ..codec.options import add_options, spec_from_args
from ..transport.pageserver import SESSION_TIMEOUT, PageServer, header_size_for

if TYPE_CHECKING:
    from . import Subparsers


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("page-server", help="run a page server for criu",
                              description=__doc__)
    p.add_argument("--images-dir", "-D", required=True, metavar="DIR")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default 0: any free port)")
    add_options(p, default="off", what="the pages received")
    p.add_argument("--lazy", action="store_true", help="serve lazy pages from DIR")
    p.add_argument("--criu-version", metavar="X.Y",
                   help="peer criu version, picks the header layout (default: the version of "
                        "the criu zdtmpy finds, as for tests; 4.2 when there is none)")
    p.add_argument("--header-size", type=int, choices=(24, 32),
                   help="force the header layout (24: criu <= 4.1, 32: criu >= 4.2)")
    p.add_argument("--sessions", type=int, default=1, metavar="N",
                   help="connections to serve before exiting (0: until interrupted)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-read timeout (seconds)")
    p.add_argument("--session-timeout", type=float, default=SESSION_TIMEOUT, metavar="S",
                   help="a whole session ends within S seconds (default %(default)g)")
    p.add_argument("--log", metavar="FILE", help="write the session log to FILE")
    p.set_defaults(func=run)


def _peer_version(text: str | None) -> tuple[int, ...]:
    if text:
        return tuple(int(x) for x in text.split(".") if x.isdigit())
    from ..criu import find_criu
    from ..errors import CriuNotFound

    try:
        return find_criu().version
    except CriuNotFound:
        return (4, 2)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    header = args.header_size or header_size_for(_peer_version(args.criu_version))
    server = PageServer(args.images_dir, spec=spec, header_size=header, address=args.address,
                        port=args.port, lazy=args.lazy, timeout=args.timeout,
                        sessions=args.sessions or None, log_path=args.log,
                        session_timeout=args.session_timeout)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    port = server.start()
    # the readiness line: a script may start criu once it has read it
    print(f"listening on {args.address}:{port}", flush=True)
    failed = 0
    try:
        index = 0
        strays = 0
        while not done.is_set() and (not args.sessions or index < args.sessions):
            for stray in server.ignored[strays:]:
                print(f"zdtmpy page-server: ignored a connection from {stray.peer} that "
                      f"failed before its first command: {stray.error}", file=sys.stderr)
                strays += 1
            try:
                result = server.wait(1.0, index)
            except Exception as exc:  # noqa: BLE001 - a timeout or a failed session
                if len(server.results) > index:
                    print(f"zdtmpy page-server: error: {exc}", file=sys.stderr)
                    failed += 1
                    index += 1
                continue
            print(f"session {index + 1}: {len(result.files)} pagemap(s), "
                  f"{result.payload_bytes} payload bytes in {result.seconds:.3f}s", flush=True)
            index += 1
    finally:
        server.stop()
    return 1 if failed else 0
