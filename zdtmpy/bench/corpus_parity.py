"""Per test, the two sides of `bench corpus`: which tests zdtm.py passed and zdtmpy did not,
and the reverse, so that a parity claim comes with its list (issue 9: every test zdtm.py
passes on a machine passes under zdtmpy with the same criu and flavor).

zdtm.py's side is its TAP report (`--report DIR`, one `ok N - zdtm/static/x` or `not ok ...`
line per test, `# SKIP reason` for skips); zdtmpy's is the junit report, each item naming its
upstream test in the `zdtm_test` property.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import JunitCase

_TAP = re.compile(r"^(not )?ok \d+ - (\S+)(.*)$")
SHOWN = 300  # characters of zdtmpy's failure message per line


def tap_results(report: Path) -> dict[str, str]:
    """{upstream test name: passed|failed|skipped} from every *.tap file in `report`."""
    out: dict[str, str] = {}
    for tap in sorted(report.glob("*.tap")):
        for line in tap.read_text(errors="replace").splitlines():
            m = _TAP.match(line)
            if m:
                out[m.group(2)] = ("skipped" if "# SKIP" in m.group(3) else
                                   "failed" if m.group(1) else "passed")
    return out


def junit_results(cases: list[JunitCase]) -> dict[str, tuple[str, str]]:
    """{upstream test name: (passed|failed|skipped, first line of the message)}."""
    out = {}
    for c in cases:
        name = c.properties.get("zdtm_test")
        if isinstance(name, str):
            outcome = "failed" if c.outcome == "error" else c.outcome
            out[name] = (outcome, c.message.strip().split("\n", 1)[0][:SHOWN])
    return out


def differences(upstream: dict[str, str], ours: dict[str, tuple[str, str]]) -> list[str]:
    """Report lines: tests zdtm.py passed that zdtmpy did not (with why), then the reverse."""
    worse = sorted(t for t, o in upstream.items() if o == "passed"
                   and ours.get(t, ("absent", ""))[0] != "passed")
    better = sorted(t for t, (o, _) in ours.items() if o == "passed"
                    and upstream.get(t) != "passed")
    lines = [f"zdtm.py passed, zdtmpy not: {len(worse)}"]
    for t in worse:
        outcome, why = ours.get(t, ("not run", ""))
        lines.append(f"  {t}: {outcome}" + (f": {why}" if why else ""))
    lines.append(f"zdtmpy passed, zdtm.py not: {len(better)}"
                 + "".join(f"\n  {t}: {upstream.get(t, 'not run')}" for t in better))
    return lines
