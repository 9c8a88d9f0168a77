"""The shell scripts CI runs must not fail on a race of their own making.

Under ``set -o pipefail`` a pipeline into a reader that stops early (``head``, ``grep -q``,
``grep -m``) fails whenever the writer is still writing when the reader exits: the writer
dies of SIGPIPE (or Python's BrokenPipeError) and the pipeline's status is its failure. It
passed here and failed CI on a slower machine (ci/package-check.sh, zipfile -l | grep -q).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EARLY_READER = re.compile(r"\|\s*(head\b|grep\s+(-\w*[qm]\w*|--quiet|--max-count))")


def _pipefail_scripts() -> list[Path]:
    candidates = [ROOT / ".ci" / "run", *sorted((ROOT / "ci").glob("*.sh")),
                  *sorted((ROOT / "bench").glob("*.sh"))]
    return [p for p in candidates if p.is_file() and "pipefail" in p.read_text()]


def early_readers(text: str) -> list[str]:
    """Lines of a script that pipe into a reader that may exit before the writer is done."""
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if not line.lstrip().startswith("#") and EARLY_READER.search(line)]


def test_the_pattern_is_seen() -> None:
    assert early_readers('x=$(ls | head -n1)\n"$py" -m zipfile -l w | grep -q LICENSE\n') == [
        "1: x=$(ls | head -n1)", "2: \"$py\" -m zipfile -l w | grep -q LICENSE"]
    assert early_readers("grep -q x file\nls | sed -n 1p\n# a | head\n") == []


def test_the_race_is_real() -> None:
    # the writer outlives a reader that stops at the first line: pipefail reports failure
    cmd = "set -o pipefail; seq 1 200000 | head -n1 >/dev/null"
    assert subprocess.run(["bash", "-c", cmd], timeout=30).returncode != 0
    cmd = "set -o pipefail; seq 1 200000 | sed -n 1p >/dev/null"
    assert subprocess.run(["bash", "-c", cmd], timeout=30).returncode == 0


@pytest.mark.parametrize("script", _pipefail_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pipe_into_an_early_reader(script: Path) -> None:
    assert early_readers(script.read_text()) == []
