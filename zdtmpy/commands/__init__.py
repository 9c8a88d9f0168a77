"""Subcommands of the `zdtmpy` CLI, one module each (see zdtmpy/cli.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # what each command's register() adds its parser to (generic only in the stubs)
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
