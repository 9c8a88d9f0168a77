"""What upstream's zdtm.py leaves on the machine, put back after the bench ran it.

Measured here: zdtm.py leaves vm.nr_hugepages=20, its named `zdtmtst` cgroup hierarchies,
`/tmp/zdtm_*` mounts and, when socket-tcp-closed/syn-sent fail, iptables DROP rules. The
bench runs zdtm.py on the user's machine, so it owes them the machine as it found it:
everything here is recorded before zdtm.py starts and only what appeared since is undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..corpus import firewall, leftmounts, sysprep
from ..sysstate import Snapshot

HUGEPAGES = "vm/nr_hugepages"


@dataclass
class Before:
    """The machine just before zdtm.py started."""
    hugepages: str | None
    snapshot: Snapshot
    rules: dict[str, list[str]]
    mounts: set[int]
    # upstream's named hierarchies alive before (zdtm_mount_cgroups makes them, with a
    # holder cgroup, and they outlive a failing run unmounted: a mount table never shows them)
    hierarchies: frozenset[str] = frozenset()

    @classmethod
    def take(cls, proc_sys: Path = Path("/proc/sys")) -> Before:
        try:
            huge: str | None = (proc_sys / HUGEPAGES).read_text().strip()
        except OSError:
            huge = None
        return cls(huge, Snapshot.take(ours={}), firewall.snapshot(),
                   {m.mount_id for m in leftmounts.table()},
                   frozenset(n for n in sysprep.HIERARCHIES if sysprep.hierarchy_exists(n)))

    def put_back(self, proc_sys: Path = Path("/proc/sys")) -> list[str]:
        """Undo what appeared since `take`; one line per thing found."""
        done = leftmounts.remove_new(self.mounts)
        done += firewall.remove_added(self.rules)
        done += self.snapshot.restore()
        for name in sysprep.HIERARCHIES:
            if name in self.hierarchies or not sysprep.hierarchy_exists(name):
                continue
            gone = sysprep.drop_hierarchy(name)
            done.append(f"cgroup hierarchy name={name}: " + (
                "its cgroups removed, unmounted (the kernel frees it)" if gone
                else "could not be emptied (a process still in it?)"))
        if self.hugepages is not None:
            path = proc_sys / HUGEPAGES
            try:
                now = path.read_text().strip()
                if now != self.hugepages:
                    path.write_text(self.hugepages)
                    done.append(f"sysctl vm.nr_hugepages: {now} -> {self.hugepages} (restored)")
            except OSError as exc:
                done.append(f"sysctl vm.nr_hugepages: could not restore {self.hugepages}: "
                            f"{exc.strerror}")
        return done
