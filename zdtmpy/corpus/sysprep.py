"""What upstream's runner sets up for the whole run, shared by every corpus session on the
machine: the first session to start sets it up, the last one to end undoes it.

* vm.nr_hugepages = 20 (upstream's hugetlb tests need pages to map);
* the named cgroup v1 hierarchies `zdtmtst` and `zdtmtst.defaultroot`, each kept alive by a
  holder cgroup, so criu never sees a controller appear in the middle of a dump;
* the host's iptables rules as found: rules tests added and left are deleted at the end;
* the host's mount table as found: upstream's mounts that appeared are removed (leftmounts);
* the host's /tmp as found: empty `zdtm_*` directories upstream's tests made are removed
  (tmpleft).

What the first session found is kept in the machine's session registry (zdtmpy/registry.py),
which every zdtmpy session joins: several sessions at once (CI jobs, developers, xdist
controllers) then never undo what another one still needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import sysstate
from ..registry import Registry, Shared
from . import cgholder, firewall, leftmounts, tmpleft

HUGEPAGES = 20
PROC_VM = Path("/proc/sys/vm")
HIERARCHIES = ("zdtmtst", "zdtmtst.defaultroot")


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
        # Also where a hierarchy is there already: see cgholder for why.
        created = set(state.get("hierarchies", []))
        new = set(state.get("new_hierarchies", []))
        found = state.setdefault("found_cgroups", {})
        for name in HIERARCHIES:
            if isinstance(found, dict) and name not in found:
                found[name] = cgholder.children(name)   # not ours to remove at the end
            held = cgholder.hold(name)
            if held is None:
                self.notes.append(f"cgroup hierarchy name={name} could not be held")
                continue
            if held[0]:
                created.add(name)
            if held[1]:
                new.add(name)
        state["hierarchies"] = sorted(created)
        state["new_hierarchies"] = sorted(new & created)
        state.setdefault("firewall", firewall.snapshot())
        state.setdefault("tmp_found", tmpleft.found())

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
    new = state.pop("new_hierarchies", [])
    found = state.pop("found_cgroups", {})
    for name in state.pop("hierarchies", []):
        if isinstance(name, str) and name in HIERARCHIES:
            out.append(cgholder.release(name, retire=name in new, found=_found_in(found, name)))
    out += firewall.remove_added(_firewall_of(state))
    state.pop("firewall", None)
    if mounts_before is not None:
        out += leftmounts.remove_new(mounts_before)
    out += tmpleft.remove_new(tmpleft.record(state.pop("tmp_found", None)))
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


def _found_in(found: object, name: str) -> set[str] | None:
    """The cgroups recorded as found under hierarchy `name`; None (remove none of them)
    where there is no record of the right shape (e.g. made by an older zdtmpy)."""
    kept = found.get(name) if isinstance(found, dict) else None
    if not isinstance(kept, list) or not all(isinstance(k, str) for k in kept):
        return None
    return set(kept)


def _firewall_of(state: dict[str, Any]) -> dict[str, list[str]]:
    """The recorded rules, only where the record has the right shape."""
    saved = state.get("firewall")
    if not isinstance(saved, dict):
        return {}
    return {tool: rules for tool, rules in saved.items()
            if tool in firewall.TOOLS and isinstance(rules, list)
            and all(isinstance(r, str) for r in rules)}
