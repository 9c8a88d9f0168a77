"""What upstream's runner sets up for the whole run, shared by every corpus session on the
machine: the first session to start sets it up, the last one to end undoes it.

* vm.nr_hugepages = 20 (upstream's hugetlb tests need pages to map);
* the named cgroup v1 hierarchies `zdtmtst` and `zdtmtst.defaultroot`, each kept alive by a
  holder cgroup, so criu never sees a controller appear in the middle of a dump;
* the host's iptables rules as found: rules tests added and left are deleted at the end;
* the host's mount table as found: upstream's mounts that appeared are removed (leftmounts).

What the first session found is kept in the machine's session registry (zdtmpy/registry.py),
which every zdtmpy session joins: several sessions at once (CI jobs, developers, xdist
controllers) then never undo what another one still needs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import sysstate
from ..registry import Registry, Shared
from . import firewall, leftmounts

HUGEPAGES = 20
PROC_VM = Path("/proc/sys/vm")
HIERARCHIES = ("zdtmtst", "zdtmtst.defaultroot")
HOLDER = "holder.zdtmpy"
TIMEOUT = 30


def _cmd(args: list[str]) -> bool:
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _hierarchy_exists(name: str) -> bool:
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return False
    return f"name={name}:" in text


def _with_mount(name: str, action: Callable[[Path], object]) -> bool:
    tmp = tempfile.mkdtemp(prefix="zdtmpy-cg-")
    try:
        if not _cmd(["mount", "-t", "cgroup", "-o", f"none,name={name}", "zdtmpy", tmp]):
            return False
        try:
            action(Path(tmp))
        finally:
            _cmd(["umount", "-l", tmp])
        return True
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(tmp)


class Prepared:
    """This session's part in the machine-wide corpus setup."""

    def __init__(self, registry: Registry | None = None, proc_vm: Path = PROC_VM) -> None:
        self.registry = registry or Registry()
        self.hugepages = proc_vm / "nr_hugepages"
        self.notes: list[str] = []
        self.mounts_before = {m.mount_id for m in leftmounts.table()}

    def setup(self) -> None:
        """Join the registry; set up what no live session has set up yet."""
        with self.registry.locked() as shared:
            self.prepare(shared)
            self.registry.join()

    def prepare(self, shared: Shared) -> None:
        """setup()'s work, for a caller that holds the registry already."""
        if shared.alone or not shared.state.get("corpus"):
            self._first(shared.state)

    def _first(self, state: dict[str, Any]) -> None:
        # A crashed last session's record may be there: setdefault keeps its originals.
        state["corpus"] = True
        try:
            now = int(self.hugepages.read_text())
            state.setdefault("nr_hugepages", now)
            if now < HUGEPAGES:
                self.hugepages.write_text(str(HUGEPAGES))
        except (OSError, ValueError):
            self.notes.append("vm.nr_hugepages could not be raised: hugetlb tests may fail")
        created = set(state.get("hierarchies", []))
        for name in HIERARCHIES:
            if name in created or _hierarchy_exists(name):
                continue
            if _with_mount(name, lambda root: (root / HOLDER).mkdir(exist_ok=True)):
                created.add(name)
            else:
                self.notes.append(f"cgroup hierarchy name={name} could not be created")
        state["hierarchies"] = sorted(created)
        state.setdefault("firewall", firewall.snapshot())

    def undo(self) -> list[str]:
        """Leave; the last session out puts back what the first one found."""
        with self.registry.locked() as shared:
            self.registry.leave()
            if not shared.alone:
                return []
            return put_back(shared.state, self.hugepages.parent, self.mounts_before)


def put_back(state: dict[str, Any], proc_vm: Path = PROC_VM,
             mounts_before: set[int] | None = None) -> list[str]:
    """The last session out (a corpus session or not): the corpus setup recorded in `state`,
    and the sysctls sessions raised, back as the first session found them; `state` is
    emptied of what was done. Upstream's mounts are known only to a corpus session
    (`mounts_before`)."""
    out = sysstate.put_back_sysctls(state)
    if not state.pop("corpus", False):
        return out
    out += _put_back(proc_vm / "nr_hugepages", state.pop("nr_hugepages", None))
    for name in state.pop("hierarchies", []):
        def drop(root: Path) -> None:
            with contextlib.suppress(OSError):
                (root / HOLDER).rmdir()
        ok = _with_mount(name, drop)
        out.append(f"cgroup hierarchy name={name}: holder "
                   + ("removed" if ok else "could not be removed"))
    out += firewall.remove_added(_firewall_of(state))
    state.pop("firewall", None)
    if mounts_before is not None:
        out += leftmounts.remove_new(mounts_before)
    return out


def _put_back(path: Path, value: object) -> list[str]:
    """Write a recorded sysctl value back where it now differs; what was done, as lines."""
    if value is None:
        return []
    name = "vm." + path.name
    try:
        now = path.read_text().strip()
        if now == str(value):
            return []
        path.write_text(str(value))
        return [f"sysctl {name}: {now} -> {value} (restored)"]
    except OSError as exc:
        return [f"sysctl {name}: could not restore: {exc.strerror}"]


def _firewall_of(state: dict[str, Any]) -> dict[str, list[str]]:
    """The recorded rules, only where the record has the right shape."""
    saved = state.get("firewall")
    if not isinstance(saved, dict):
        return {}
    return {tool: rules for tool, rules in saved.items()
            if tool in firewall.TOOLS and isinstance(rules, list)
            and all(isinstance(r, str) for r in rules)}
