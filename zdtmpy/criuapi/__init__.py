"""The seam between the cycles and criu: "run this criu action", by command line or RPC.

The cycles build criu's command-line arguments once; a back end runs them. `cli` execs
`criu ACTION ARGS`; `rpc` sends the same action and options as criu's RPC messages to a
`criu swrk` service (what container engines do). Both raise the same errors and return a
CriuRun, so every check after the action is the same whichever API ran it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..criu import Criu, CriuRun
from ..errors import ZdtmError

APIS = ("cli", "rpc")
# What criu's RPC does not offer: these stay on the command line in rpc runs.
RPC_LACKS = {
    "lazy-pages": "criu has no RPC request for the lazy-pages daemon",
    "stream": "criu_opts has no --stream field",
}


class CriuBackend(Protocol):
    name: str
    criu: Criu

    def run(self, action: str, args: list[str], *, log: Path, stage: str, timeout: float,
            expect_fail: bool = False, env: dict[str, str] | None = None) -> CriuRun: ...


@dataclass
class CliBackend:
    """`criu ACTION ARGS -o LOG -v4`, a process per action."""

    criu: Criu
    name: str = "cli"

    def run(self, action: str, args: list[str], *, log: Path, stage: str, timeout: float,
            expect_fail: bool = False, env: dict[str, str] | None = None) -> CriuRun:
        return self.criu.run(action, args, log=log, stage=stage, timeout=timeout,
                             expect_fail=expect_fail, env=env)


def check_api(name: str) -> str:
    if name not in APIS:
        raise ZdtmError(f"unknown criu API {name!r} (expected one of: {', '.join(APIS)})")
    return name


def backend_for(criu: Criu, api: str) -> CriuBackend:
    if check_api(api) == "rpc":
        from .rpc import RpcBackend

        return RpcBackend(criu)
    return CliBackend(criu)
