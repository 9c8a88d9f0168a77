"""`zdtmpy stream capture|serve|extract`: zdtmpy's image streamer for `criu --stream` by hand.

capture: listen on DIR/streamer-capture.sock, receive one `criu dump --stream -D DIR` and
write it as one stream file (pages compressed on the fly with --compress / --region).
serve: listen on DIR/streamer-serve.sock and feed `criu restore --stream -D DIR` from a
stream file, decompressing pages on the fly. extract: write a stream out as an ordinary
image directory. `-` means stdin / stdout. The socket appearing is the readiness signal.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from ..codec.options import add_options
from ..errors import ZdtmError

if TYPE_CHECKING:
    from ..codec import Compression
    from . import Subparsers


class Interrupted(ZdtmError):
    pass


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("stream", help="image streamer for criu --stream",
                              description=__doc__)
    sub = p.add_subparsers(dest="stream_command", metavar="ACTION")
    sub.required = True

    c = sub.add_parser("capture", help="receive a criu dump --stream into a stream file")
    c.add_argument("--images-dir", required=True, metavar="DIR",
                   help="criu's -D directory (the socket is created there)")
    c.add_argument("--stream-file", required=True, metavar="FILE", help="output; - = stdout")
    add_options(c, default="off", what="the pages in the stream")
    c.add_argument("--fsync", action="store_true",
                   help="fsync the stream file before renaming it into place")
    _timeouts(c)
    c.set_defaults(func=run)

    s = sub.add_parser("serve", help="feed a criu restore --stream from a stream file")
    s.add_argument("--images-dir", required=True, metavar="DIR")
    s.add_argument("--stream-file", required=True, metavar="FILE", help="input; - = stdin")
    s.add_argument("--no-verify", action="store_true",
                   help="skip the checksum pass over the whole stream before serving")
    _timeouts(s)
    s.set_defaults(func=run)

    e = sub.add_parser("extract", help="write a stream out as an image directory")
    e.add_argument("--stream-file", required=True, metavar="FILE", help="input; - = stdin")
    e.add_argument("--images-dir", required=True, metavar="OUT")
    e.add_argument("--decompress", action="store_true",
                   help="write plain (uncompressed, version 2) images")
    e.set_defaults(func=run)


def _timeouts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accept-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for criu to connect (default 60)")
    p.add_argument("--idle-timeout", type=float, default=60.0, metavar="S",
                   help="seconds without progress before giving up (default 60)")


def _on_term(signum: int, frame: FrameType | None) -> NoReturn:
    raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")


def _tune_malloc() -> None:
    """Keep 1 MiB buffers on the heap: with glibc's default, each one is a fresh mmap whose
    pages fault in and are unmapped again, which doubled capture's system time (measured)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 64 << 20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 64 << 20)   # M_TOP_PAD
    except (OSError, AttributeError):
        pass  # not glibc: slower, same result


def _log(line: str) -> None:
    print(f"zdtmpy stream: {time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _on_term)  # clean up (socket, partial file) on SIGTERM
    _tune_malloc()  # a process of its own: global allocator settings are ours
    if args.stream_command == "capture":
        from ..transport.capture import Capture

        spec = _spec(args)
        out = sys.stdout.buffer if args.stream_file == "-" else args.stream_file
        cap = Capture(args.images_dir, out, spec, args.accept_timeout, args.idle_timeout, _log,
                      fsync=args.fsync)
        cap.listen()
        _log("ready")
        got = cap.run()
        print(f"zdtmpy stream capture: {got.files} files, {got.pages_in} pages, "
              f"{got.image_bytes} -> {got.stream_bytes} bytes ({got.layout}) in "
              f"{got.seconds:.2f}s", file=sys.stderr)
        return 0
    if args.stream_command == "serve":
        from ..transport.serve import Serve

        src = sys.stdin.buffer if args.stream_file == "-" else args.stream_file
        srv = Serve(args.images_dir, src, args.accept_timeout, args.idle_timeout, _log,
                    verify=not args.no_verify)
        srv.listen()
        _log("ready")
        served = srv.run()
        print(f"zdtmpy stream serve: {len(served)} files served", file=sys.stderr)
        return 0
    from ..transport.serve import check_pages_sizes
    from ..transport.streamextract import extract
    from ..transport.streamindex import index_stream

    if args.stream_file != "-":
        # a file can be scanned first (payloads skipped): sizes that do not match the
        # pagemaps are refused before a single byte is written
        check_pages_sizes(args.stream_file, index_stream(args.stream_file, verify=False),
                          "extract")
    if args.stream_file == "-":
        res = extract(sys.stdin.buffer, args.images_dir, "stdin", args.decompress)
    else:
        try:
            src = open(args.stream_file, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ZdtmError(f"{args.stream_file}: cannot open stream: {exc.strerror}") from None
        with src:
            res = extract(src, args.images_dir, args.stream_file, args.decompress)
    how = f"{res.layout}, compressed" if res.compressed else "plain"
    print(f"{args.images_dir}: {len(res.files)} files extracted ({how})")
    return 0


def _spec(args: argparse.Namespace) -> Compression | None:
    from ..codec.options import spec_from_args

    return spec_from_args(args)
