"""The `zdtmpy` command: a thin dispatcher over `zdtmpy.commands.<name>` modules.

Each command module defines `register(subparsers)` adding its parser with `func=run`, and
`run(args) -> int`. Modules are imported only when listed, so one broken command never
breaks the others.
"""

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .errors import ZdtmError

# Commands whose process has nothing left to tear down when they return (a streamer has
# closed its files, sockets and pipes; its threads are done): the process ends without the
# interpreter's teardown, which took 50-150 ms (measured) after criu's restore had finished.
QUICK_EXIT = {"stream"}

# command name -> module under zdtmpy.commands
COMMANDS = {
    "compress": "compress",
    "decompress": "decompress",
    "verify": "verify",
    "show": "show",
    "rebase": "rebase",
    "dedup": "dedup",
    "page-server": "page_server",
    "stream": "stream",
    "bench": "bench",
    "criu": "criu_info",
    "report": "report",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with the one named `only` (a command's start-up
    then imports that command's module alone: streamers and page servers start on a
    deadline)."""
    parser = argparse.ArgumentParser(prog="zdtmpy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(f"zdtmpy.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"zdtmpy.commands.{module}":
                raise
            continue  # command not shipped in this build
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZdtmError as exc:
        print(f"zdtmpy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"zdtmpy {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`zdtmpy report ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def run() -> NoReturn:
    """The `zdtmpy` process: main() on sys.argv, then exit (see QUICK_EXIT)."""
    rc = main()
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT:
        try:
            sys.stdout.flush()   # `stream capture --stream-file -` writes the stream here
        except OSError as exc:
            print(f"zdtmpy {sys.argv[1]}: error: writing stdout: {exc}", file=sys.stderr)
            rc = rc or 1
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run()
