"""Host firewall rules that upstream tests add and may leave behind.

Several flavor-h tests (socket-tcp-closed, socket-tcp-syn-sent, ...) add an iptables DROP rule
on the host and delete it only when they finish; a test that fails at dump never does, and the
rule then makes every later test on that port hang at start. A session records the rules it
found and, when it ends, deletes the rules that appeared since: only those, so a change someone
else made to the other rules is kept.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

TOOLS = ("iptables", "ip6tables")
TIMEOUT = 30
_TABLE = re.compile(r"^\*(\S+)$")


def _run(args: list[str]) -> str | None:
    try:
        res = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def rules(tool: str) -> list[str] | None:
    """`-t TABLE -A CHAIN ...` for every rule `TOOL-save` lists; None if it cannot be read."""
    if shutil.which(f"{tool}-save") is None:
        return None
    text = _run([f"{tool}-save"])
    if text is None:
        return None
    out, table = [], "filter"
    for line in text.splitlines():
        m = _TABLE.match(line)
        if m:
            table = m.group(1)
        elif line.startswith("-A "):
            out.append(f"-t {table} {line}")
    return out


def snapshot() -> dict[str, list[str]]:
    """The rules of every firewall tool this machine has."""
    found = {}
    for tool in TOOLS:
        listed = rules(tool)
        if listed is not None:
            found[tool] = listed
    return found


def remove_added(before: dict[str, list[str]]) -> list[str]:
    """Delete the rules that are there now but were not in `before`; say what happened."""
    notes = []
    for tool, old in before.items():
        now = rules(tool)
        if now is None:
            continue
        remaining = list(old)
        for rule in now:
            if rule in remaining:
                remaining.remove(rule)  # the same rule may stand twice: count them
                continue
            spec = shlex.split(rule)
            deleted = _run([tool, "-w", *spec[:2], "-D", *spec[3:]]) is not None
            notes.append(f"{tool} rule left by a test: {rule[len('-t '):]} -> "
                         + ("deleted" if deleted else "could NOT be deleted"))
    return notes
