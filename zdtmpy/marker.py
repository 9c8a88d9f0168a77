"""Process markers: every process zdtmpy starts for a test carries its owner in its environment.

    ZDTMPY_MARK=v1:<owner pid>:<owner start time>:<owner pid-namespace inode>:<run tag>

The owner is the pytest process (an xdist worker, or the only process) that started it; the
start time (field 22 of /proc/PID/stat) tells a live owner from a recycled pid. criu restores
a tree with the environment it dumped, so restored workloads keep their mark, and criu's own
children (tasks being restored) inherit criu's.

Two uses:
* `kill_tagged(tag)` ends every process of one test, wherever it lives (another session,
  another PID namespace, a half-restored tree): a test's cleanup does not depend on knowing
  pids that only criu knew.
* `sweep()` ends marked processes whose owner is gone (a crashed or SIGKILLed session). It
  never touches a process whose owner is alive: several sessions share this machine.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

VAR = "ZDTMPY_MARK"
_PREFIX = (VAR + "=").encode()
_MARK_RE = re.compile(r"v1:(\d+):(\d+):(\d+):([A-Za-z0-9._-]{1,64})")
_ENVIRON_CAP = 1 << 20  # never read more of a foreign environment than this


@dataclass(frozen=True)
class Owner:
    """A process identified across pid reuse."""

    pid: int
    start: int  # clock ticks after boot (/proc/PID/stat field 22)
    pidns: int  # inode of its pid namespace

    def alive(self) -> bool:
        return start_time(self.pid) == self.start


@dataclass(frozen=True)
class Mark:
    owner: Owner
    tag: str

    def __str__(self) -> str:
        o = self.owner
        return f"v1:{o.pid}:{o.start}:{o.pidns}:{self.tag}"


def start_time(pid: int) -> int | None:
    """Start time of PID in clock ticks after boot, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[:1] in ([b"Z"], [b"X"]):
        return None
    return int(fields[19])  # field 22 overall; fields here start at field 3


def _pidns(pid: int | str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


def me() -> Owner:
    pid = os.getpid()
    start = start_time(pid)
    assert start is not None  # we are running
    return Owner(pid, start, _pidns())


def new_tag(hint: str = "") -> str:
    """A tag unique to one test run, readable in `ps e` output."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", hint).strip("-")[:40]
    return f"{safe}.{secrets.token_hex(4)}" if safe else secrets.token_hex(4)


def mark(tag: str) -> Mark:
    return Mark(me(), tag)


def env(tag: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) plus this process's mark with `tag`: pass as Popen env=."""
    out = dict(os.environ if base is None else base)
    out[VAR] = str(mark(tag))
    return out


def parse(value: str) -> Mark | None:
    m = _MARK_RE.fullmatch(value)
    if not m:
        return None
    return Mark(Owner(int(m.group(1)), int(m.group(2)), int(m.group(3))), m.group(4))


def read_mark(pid: int) -> Mark | None:
    """The mark in PID's environment, or None (unmarked, gone, or unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read(_ENVIRON_CAP)
    except OSError:
        return None
    for item in data.split(b"\0"):
        if item.startswith(_PREFIX):
            return parse(item[len(_PREFIX):].decode("ascii", "replace"))
    return None


def marked() -> Iterator[tuple[int, Mark]]:
    """Every live process on the machine that carries a mark (never this process)."""
    self_pid = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == self_pid:
            continue
        found = read_mark(int(name))
        if found is not None:
            yield int(name), found


@dataclass(frozen=True)
class Killed:
    pid: int
    mark: Mark
    cmdline: str


def _kill_until_gone(select: Callable[[Mark], bool], timeout: float) -> list[Killed]:
    """SIGKILL every process `select(mark)` picks, again until none is left (a dying tree may
    still fork, criu may still be creating tasks). Zombies carry no environment, so they count
    as gone; reaping them is the caller's business (Popen objects may still own some)."""
    killed: dict[int, Killed] = {}
    deadline = time.monotonic() + timeout
    while True:
        batch = [(pid, m) for pid, m in marked() if select(m)]
        if not batch:
            break
        for pid, m in batch:
            cmd = _cmdline(pid)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.setdefault(pid, Killed(pid, m, cmd))
            except ProcessLookupError:
                pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return [killed[pid] for pid in sorted(killed)]


def kill_tagged(tag: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process this process started under `tag`; returns their pids."""
    owner = me()
    return [k.pid for k in _kill_until_gone(lambda m: m.owner == owner and m.tag == tag,
                                            timeout)]


def kill_owned(timeout: float = 10.0) -> list[int]:
    """SIGKILL every process this process started under any tag (a session's last resort)."""
    owner = me()
    return [k.pid for k in _kill_until_gone(lambda m: m.owner == owner, timeout)]


def orphaned(m: Mark, pidns: int) -> bool:
    """The mark's owner is gone. Marks from another pid namespace are never judged: their pids
    mean nothing here."""
    return m.owner.pidns == pidns and not m.owner.alive()


def sweep(timeout: float = 10.0) -> list[Killed]:
    """Kill marked processes whose owning session is gone; returns what it killed."""
    ns = _pidns()
    return _kill_until_gone(lambda m: orphaned(m, ns), timeout)


def describe(killed: list[Killed]) -> str:
    """One line per killed process, for the session header."""
    return "\n".join(f"  pid {k.pid}: {k.cmdline} (test {k.mark.tag}, owner pid "
                     f"{k.mark.owner.pid} gone)" for k in killed)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read(200).replace(b"\0", b" ").decode(errors="replace").strip() or "?"
    except OSError:
        return "(exited)"
