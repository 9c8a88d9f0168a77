"""Which upstream corpus to run, and the tests it holds (from its metadata, never executed).

A suite is a criu source tree's `test/zdtm` directory. Tests are the ones upstream's Makefiles
list in `static/` and `transition/`; upstream's own exclusion list (`test/zdtm.desc`'s
`exclude`) and start protocols it does not share with ordinary tests are facts each test
carries, so the item says why it does not run instead of vanishing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZdtmError
from . import makefile

SUBDIRS = ("static", "transition")


@dataclass(frozen=True)
class UpstreamTest:
    """One upstream test: 'zdtm/static/maps00' and how upstream starts it."""

    name: str  # relative to the tree's test/ directory, as upstream names it
    subdir: str  # 'static' | 'transition'
    short: str  # 'maps00'
    argv: tuple[str, ...]  # Makefile template after the executable ('$<' = short name)
    excluded: str = ""  # why upstream keeps it out of its default run ('' = it does not)

    def source_dir(self, suite: Suite) -> Path:
        return suite.zdtm / self.subdir

    def file(self, suite: Suite, suffix: str) -> Path:
        return suite.zdtm / self.subdir / f"{self.short}{suffix}"


@dataclass(frozen=True)
class Suite:
    """A criu tree's test/zdtm directory."""

    zdtm: Path

    @property
    def test_dir(self) -> Path:
        return self.zdtm.parent  # upstream runs everything from here

    @property
    def tree(self) -> Path:
        return self.test_dir.parent

    @property
    def label(self) -> str:
        name = self.tree.name
        return name if name.startswith("criu") else f"criu-{name}"

    def tests(self) -> list[UpstreamTest]:
        excluded = _exclusions(self.test_dir / "zdtm.desc")
        out: list[UpstreamTest] = []
        for sub in SUBDIRS:
            mk = self.zdtm / sub / "Makefile"
            if not mk.exists():
                continue
            parsed = makefile.read(mk)
            for short in sorted(parsed.argv):
                why = excluded.get(f"{sub}/{short}", "")
                out.append(UpstreamTest(f"zdtm/{sub}/{short}", sub, short,
                                        parsed.argv[short], why))
            for short in parsed.state_tests:
                why = excluded.get(f"{sub}/{short}") or (
                    "upstream starts it with a statefile (start/stop protocol), "
                    "not a pidfile: not supported here")
                out.append(UpstreamTest(f"zdtm/{sub}/{short}", sub, short, (), why))
        if not out:
            raise ZdtmError(f"{self.zdtm}: no upstream tests found (no static/Makefile)")
        return out


def _exclusions(path: Path) -> dict[str, str]:
    """test/zdtm.desc's 'exclude' list: {'static/route_rules': reason}."""
    if not path.exists():
        return {}
    try:
        raw = ast.literal_eval(path.read_text(errors="replace"))
    except (SyntaxError, ValueError):
        raise ZdtmError(f"{path}: not a dict literal (upstream's test set descriptor)") \
            from None
    if not isinstance(raw, dict) or not isinstance(raw.get("exclude", []), list):
        raise ZdtmError(f"{path}: expected {{'dir': ..., 'exclude': [...]}}")
    return {str(x): f"excluded by upstream's {path.name}" for x in raw.get("exclude", [])}


def resolve(spec: str, criu_path: Path | None) -> Suite:
    """`--zdtm-suite` value -> Suite. 'criu' = the source tree of the criu under test."""
    if spec == "criu":
        if criu_path is None:
            raise ZdtmError("--zdtm-suite criu: no usable criu was found, so there is no "
                            "source tree to take the tests from (pass --zdtm-suite PATH)")
        tree = Path(criu_path).resolve().parent.parent
        if not (tree / "test" / "zdtm" / "static" / "Makefile").exists():
            raise ZdtmError(f"--zdtm-suite criu: the criu under test ({criu_path}) was not "
                            "built in a criu source tree (no ../test/zdtm next to it); run "
                            "ci/provision-criu.sh --from-source, or pass --zdtm-suite PATH")
        return Suite(tree / "test" / "zdtm")
    path = Path(spec).expanduser().resolve()
    for zdtm in (path / "test" / "zdtm", path / "zdtm", path):
        if (zdtm / "static" / "Makefile").exists():
            return Suite(zdtm)
    raise ZdtmError(f"--zdtm-suite {spec}: not a criu source tree or its test/zdtm directory "
                    "(no static/Makefile found under it)")
