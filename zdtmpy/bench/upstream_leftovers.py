"""What upstream's zdtm.py leaves on the machine, put back after the bench ran it.

Measured here: zdtm.py leaves vm.nr_hugepages=20, its named `zdtmtst` cgroup hierarchies,
`/tmp/zdtm_*` mounts and, when socket-tcp-closed/syn-sent fail, iptables DROP rules. The
bench runs zdtm.py on the user's machine, so it owes them the machine as it found it:
everything here is recorded before zdtm.py starts and only what appeared since is undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..corpus import firewall, leftmounts
from ..sysstate import Snapshot

HUGEPAGES = "vm/nr_hugepages"


@dataclass
class Before:
    """The machine just before zdtm.py started."""
    hugepages: str | None
    snapshot: Snapshot
    rules: dict[str, list[str]]
    mounts: set[int]

    @classmethod
    def take(cls, proc_sys: Path = Path("/proc/sys")) -> Before:
        try:
            huge: str | None = (proc_sys / HUGEPAGES).read_text().strip()
        except OSError:
            huge = None
        return cls(huge, Snapshot.take(ours={}), firewall.snapshot(),
                   {m.mount_id for m in leftmounts.table()})

    def put_back(self, proc_sys: Path = Path("/proc/sys")) -> list[str]:
        """Undo what appeared since `take`; one line per thing found."""
        done = leftmounts.remove_new(self.mounts)
        done += firewall.remove_added(self.rules)
        done += self.snapshot.restore()
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
