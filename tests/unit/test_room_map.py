"""The room map of docs/DESIGN.md stays true: every module has a room, no room imports one
below it (lazy imports inside functions count too), nothing above `cycle/` imports pytest,
and no module grows over 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "zdtmpy"
DESIGN = ROOT / "docs" / "DESIGN.md"
MAX_LINES = 400
DATA_PACKAGES = {"descs", "workloads"}   # shipped descriptors and C sources, no code rooms


def rooms() -> dict[str, int]:
    """Top-level module or package name -> its line in the map (0 = the bottom room)."""
    text = DESIGN.read_text()
    table = text[text.index("## Rooms, bottom up"):]
    table = table[:table.index("\n\n", table.index("| room |"))]
    out: dict[str, int] = {}
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for level, line in enumerate(rows):
        for name in re.findall(r"`([\w.]+/?)`", line.split("|")[1]):
            out[name.removesuffix("/").removesuffix(".py")] = level
    return out


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if ".venv" not in p.parts)


def _dotted(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported(path: Path) -> list[tuple[int, list[str]]]:
    """(line, dotted name) of every zdtmpy module or name `path` imports, anywhere in it."""
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if node.module is None:   # from . import x: x is a module of that package
                out += [(node.lineno, target + [a.name]) for a in node.names]
            else:
                out.append((node.lineno, target))
    return [(line, name) for line, name in out if name[0] in ("zdtmpy", "pytest")]


def _room(dotted: list[str]) -> str | None:
    """The top-level room of a zdtmpy module (None: the package root or a name in it, such
    as `from .. import __version__`)."""
    if len(dotted) < 2:
        return None
    name = dotted[1]
    return name if (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir() else None


def test_every_module_has_a_room():
    known = rooms()
    missing = sorted({str(p.relative_to(ROOT)) for p in modules()
                      if (room := _room(_dotted(p))) is not None
                      and room not in known and room not in DATA_PACKAGES})
    assert not missing, f"modules with no room in {DESIGN.name}'s map: {missing}"


def test_no_upward_import_and_no_pytest_above_cycle():
    known = rooms()
    problems = []
    for path in modules():
        room = _room(_dotted(path))
        if room is None or room in DATA_PACKAGES or room not in known:
            continue
        for line, name in imported(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if name[0] == "pytest":
                if known[room] < known["cycle"]:
                    problems.append(f"{where}: imports pytest, above the cycle room")
                continue
            target = _room(name)
            if target is None or target in DATA_PACKAGES:
                continue
            if target not in known:
                problems.append(f"{where}: imports {'.'.join(name)}, which has no room")
            elif known[target] > known[room]:
                problems.append(f"{where}: {room} imports {target}, a room below it")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_400_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)}: {n} lines (split it: one job a module)"


def test_the_walk_sees_what_it_must():
    """The checks above could pass by seeing nothing: the map and the walker on known facts."""
    known = rooms()
    assert known["errors"] == 0 and known["codec"] < known["images"] < known["compress"]
    assert known["compress"] < known["transport"] < known["cycle"] < known["plugin"]
    names = {".".join(n) for _, n in imported(PACKAGE / "compress" / "writer.py")}
    assert "zdtmpy.codec.blocks" in names and "zdtmpy.compress.pipeline" in names
    names = {".".join(n) for _, n in imported(PACKAGE / "cycle" / "dedup.py")}
    assert "zdtmpy.compress.dedup" in names and "zdtmpy.cycle.chain" in names
