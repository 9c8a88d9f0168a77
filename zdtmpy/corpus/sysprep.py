"""What upstream's runner sets up for the whole run, shared by every corpus session on the
machine: the first session to start sets it up, the last one to end undoes it.

* vm.nr_hugepages = 20 (upstream's hugetlb tests need pages to map);
* vm.unprivileged_userfaultfd = 1, only for a session that runs flavor uns in a lazy mode:
  criu's restored tasks open their userfaultfd inside the test's user namespace, and with 0
  the kernel refuses it there (EPERM) -- every uns lazy item would fail for that alone;
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
PROC_VM = Path("/proc/sys/vm")
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

    def __init__(self, registry: Path = REGISTRY, proc_vm: Path = PROC_VM,
                 userfaultfd: bool = False) -> None:
        self.registry = registry
        self.hugepages = proc_vm / "nr_hugepages"
        self.uffd = proc_vm / "unprivileged_userfaultfd" if userfaultfd else None
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
            if self.uffd is not None:
                self._allow_userfaultfd(state_file)
            self.entry.write_text("")

    def _allow_userfaultfd(self, state_file: Path) -> None:
        """Any session that needs it raises it; the first to do so records the original."""
        assert self.uffd is not None
        state: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
        try:
            now = self.uffd.read_text().strip()
            state.setdefault("unprivileged_userfaultfd", now)
            if now != "1":
                self.uffd.write_text("1")
        except OSError:
            self.notes.append("vm.unprivileged_userfaultfd could not be set to 1: lazy modes "
                              "fail in flavor uns (userfaultfd refused in a user namespace)")
        state_file.write_text(json.dumps(state))

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
            out += _put_back(self.hugepages, state.get("nr_hugepages"))
            out += _put_back(self.hugepages.with_name("unprivileged_userfaultfd"),
                             state.get("unprivileged_userfaultfd"))
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
