"""Firewall rules a test leaves behind are deleted at the end of the session; rules that were
there before stay. Real iptables, in a network namespace of the test's own (the host's rules
are never touched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="iptables needs root"),
    pytest.mark.skipif(shutil.which("iptables-save") is None or shutil.which("unshare") is None,
                       reason="needs iptables and unshare"),
]

SCRIPT = """
import json, subprocess
from zdtmpy.corpus import firewall

def add(port):
    subprocess.run(["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", str(port),
                    "-j", "DROP"], check=True)

add(7001)                                   # there before the session: stays
before = firewall.snapshot()
add(7002); add(7002); add(7001)             # left by tests (one twice, one a second copy)
notes = firewall.remove_added(before)
print(json.dumps({"notes": notes, "after": firewall.rules("iptables")}))
"""


def test_rules_added_during_the_session_are_deleted_and_others_kept():
    res = subprocess.run(["unshare", "--net", sys.executable, "-c", SCRIPT],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0 and "iptables" in res.stderr and "DROP" not in res.stdout:
        pytest.skip(f"iptables does not work in a new network namespace: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["after"] == ["-t filter -A INPUT -p tcp -m tcp --dport 7001 -j DROP"]
    assert len(out["notes"]) == 3, out["notes"]
    assert all(n.endswith("-> deleted") for n in out["notes"]), out["notes"]
    assert sum("--dport 7002" in n for n in out["notes"]) == 2
