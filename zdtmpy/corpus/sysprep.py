"""What upstream's runner sets up for the whole run, shared by every corpus session on the
machine: the first session to start sets it up, the last one to end undoes it.

* vm.nr_hugepages = 20 (upstream's hugetlb tests need pages to map);
* the named cgroup v1 hierarchies `zdtmtst` and `zdtmtst.defaultroot`, each kept alive by a
  holder cgroup, so criu never sees a controller appear in the middle of a dump;
* the host's iptables rules as found: rules tests added and left are deleted at the end;
* the host's mount table as found: upstream's mounts that appeared are removed (leftmounts).

Sessions register in a directory (`/run/zdtmpy-corpus`, one file per session, named by its
pid and start time, so a crashed session is recognised and dropped) under a lock; the original
sysctl value is recorded there by the first session. Several sessions at once (CI jobs,
developers, xdist controllers) then never undo what another one still needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import marker
from . import firewall, leftmounts

HUGEPAGES = 20
HIERARCHIES = ("zdtmtst", "zdtmtst.defaultroot")
HOLDER = "holder.zdtmpy"
TIMEOUT = 30
REGISTRY = Path(os.environ.get("ZDTMPY_CORPUS_REGISTRY", "/run/zdtmpy-corpus"))


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
    """This session's membership in the machine-wide corpus setup."""

    def __init__(self, registry: Path = REGISTRY,
                 hugepages: Path = Path("/proc/sys/vm/nr_hugepages")) -> None:
        self.registry = registry
        self.hugepages = hugepages
        me = marker.me()
        self.entry = registry / f"session-{me.pid}-{me.start}"
        self.notes: list[str] = []
        self.mounts_before = {m.mount_id for m in leftmounts.table()}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.registry.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.registry / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _live_others(self) -> list[Path]:
        live = []
        for f in self.registry.glob("session-*"):
            if f == self.entry:
                continue
            try:
                _, pid, start = f.name.split("-")
                alive = marker.start_time(int(pid)) == int(start)
            except ValueError:
                alive = False
            if alive:
                live.append(f)
            else:
                with contextlib.suppress(OSError):
                    f.unlink()  # a session that crashed: it no longer counts
        return live

    def setup(self) -> None:
        with self._locked():
            state_file = self.registry / "original.json"
            if not self._live_others() or not state_file.exists():
                self._first(state_file)
            self.entry.write_text("")

    def _first(self, state_file: Path) -> None:
        state: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())  # a crashed last session's record
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
        state_file.write_text(json.dumps(state))

    def undo(self) -> list[str]:
        """Leave; the last session out puts back what the first one set up."""
        out: list[str] = []
        with self._locked():
            with contextlib.suppress(OSError):
                self.entry.unlink()
            if self._live_others():
                return out
            state_file = self.registry / "original.json"
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                return out
            if "nr_hugepages" in state:
                try:
                    now = self.hugepages.read_text().strip()
                    if now != str(state["nr_hugepages"]):
                        self.hugepages.write_text(str(state["nr_hugepages"]))
                        out.append(f"sysctl vm.nr_hugepages: {now} -> "
                                   f"{state['nr_hugepages']} (restored)")
                except OSError as exc:
                    out.append(f"sysctl vm.nr_hugepages: could not restore: {exc.strerror}")
            for name in state.get("hierarchies", []):
                def drop(root: Path) -> None:
                    with contextlib.suppress(OSError):
                        (root / HOLDER).rmdir()
                ok = _with_mount(name, drop)
                out.append(f"cgroup hierarchy name={name}: holder "
                           + ("removed" if ok else "could not be removed"))
            out += firewall.remove_added(_firewall_of(state))
            out += leftmounts.remove_new(self.mounts_before)
            with contextlib.suppress(OSError):
                state_file.unlink()
        return out


def _firewall_of(state: dict[str, Any]) -> dict[str, list[str]]:
    """The recorded rules, only where the record has the right shape."""
    saved = state.get("firewall")
    if not isinstance(saved, dict):
        return {}
    return {tool: rules for tool, rules in saved.items()
            if tool in firewall.TOOLS and isinstance(rules, list)
            and all(isinstance(r, str) for r in rules)}
