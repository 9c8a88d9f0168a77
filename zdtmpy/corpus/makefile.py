"""Read the test lists and start rules of an upstream ZDTM Makefile, without running make.

Upstream's `test/zdtm/static/Makefile` sorts tests into groups whose `.pid` rule decides the
command line: `TST_NOFILE` (pidfile and outfile only), `TST_FILE` (+ `--filename`), `TST_DIR`
(+ `--dirname`), `TST_DIR_FILE` (both), plus a few tests with a rule of their own
(`env00.pid: env00` and its recipe). `TST_STATE` tests use another protocol (start/stop with
a statefile). Only plain variable assignments and those rules are read; anything else in the
Makefile is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZdtmError

# Group -> the arguments its `.pid` rule adds after --pidfile/--outfile; $< is the test name.
GROUP_ARGS: dict[str, tuple[str, ...]] = {
    "TST_NOFILE": (),
    "TST_FILE": ("--filename=$<.test",),
    "TST_DIR": ("--dirname=$<.test",),
    "TST_DIR_FILE": ("--dirname=$<.dir.test", "--filename=$<.test"),
}
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(:=|\+=|\?=|=)\s*(.*)$")
_OWN_RULE = re.compile(r"^([A-Za-z0-9_.+-]+)\.pid\s*:\s*([A-Za-z0-9_.+-]+)\s*$")
_VAR_REF = re.compile(r"^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$")


@dataclass(frozen=True)
class MakefileTests:
    """What one Makefile says: test name -> argv template (after the executable)."""

    path: Path
    argv: dict[str, tuple[str, ...]]  # '$<' stands for the test name
    state_tests: tuple[str, ...]  # TST_STATE: start/stop protocol, not a .pid rule


def _logical_lines(text: str) -> list[str]:
    """Join backslash continuations; drop comments."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0] if not raw.startswith("\t") else raw
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return out


def variables(text: str) -> dict[str, list[str]]:
    """Plain `NAME := words` / `=` / `+=` assignments at column 0 (no target-specific ones)."""
    found: dict[str, list[str]] = {}
    for line in _logical_lines(text):
        if line.startswith("\t") or ":" in line.split("=", 1)[0].rstrip(":+?"):
            continue
        m = _ASSIGN.match(line)
        if not m:
            continue
        name, op, value = m.groups()
        words = value.split()
        if op == "+=":
            found.setdefault(name, []).extend(words)
        elif op == "?=":
            found.setdefault(name, words)
        else:
            found[name] = words
    return found


def _expand(words: list[str], known: dict[str, list[str]]) -> list[str]:
    out = []
    for w in words:
        m = _VAR_REF.match(w)
        out.extend(_expand(known.get(m.group(1), []), known) if m else [w])
    return out


def _own_rules(text: str) -> dict[str, tuple[str, ...]]:
    """`NAME.pid: NAME` rules with a one-line recipe `$(<D)/$(<F) --pidfile=$@ ... args`."""
    rules: dict[str, tuple[str, ...]] = {}
    lines = _logical_lines(text)
    for i, line in enumerate(lines):
        m = _OWN_RULE.match(line)
        if not m or m.group(1) != m.group(2) or i + 1 >= len(lines):
            continue
        recipe = lines[i + 1]
        if not recipe.startswith("\t"):
            continue
        words = recipe.split()
        if not words or words[0] != "$(<D)/$(<F)":
            continue
        args = [w for w in words[1:]
                if not w.startswith("--pidfile=") and not w.startswith("--outfile=")]
        rules[m.group(1)] = tuple(args)
    return rules


def read(path: Path) -> MakefileTests:
    """Parse one upstream test Makefile. ZdtmError names the file when it holds no tests."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ZdtmError(f"{path}: cannot read: {exc.strerror}") from None
    known = variables(text)
    argv: dict[str, tuple[str, ...]] = {}
    for group, extra in GROUP_ARGS.items():
        for name in _expand(known.get(group, []), known):
            argv[name] = extra
    for name, extra in _own_rules(text).items():
        argv[name] = extra
    # Tests named in TST but in no group and with no rule of their own have no start rule.
    for name in _expand(known.get("TST", []), known):
        argv.setdefault(name, ())
    state = tuple(_expand(known.get("TST_STATE", []), known))
    if not argv and not state:
        raise ZdtmError(f"{path}: no test lists (TST_NOFILE, TST_FILE, ...) found")
    return MakefileTests(path, argv, state)


def command(exe: Path, name: str, template: tuple[str, ...]) -> list[str]:
    """The argv upstream's `.pid` rule runs, with files relative to the test's directory."""
    return [str(exe), f"--pidfile={name}.pid", f"--outfile={name}.out",
            *(w.replace("$<", name) for w in template)]
