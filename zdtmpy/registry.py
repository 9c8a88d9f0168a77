"""The zdtmpy sessions alive on this machine, and what the first of them found.

Several sessions may run at once on one machine (CI jobs, developers, xdist controllers; a
worker is its controller's child and counts as it). A system-wide setting one of them
changes (fs.pipe-max-size for remote lazy pages, the corpus's hugepages, cgroup hierarchies
and firewall) must stay while any of them runs, and be put back by the last one out to what
the first one in found -- not to what a later one found, which may be a value zdtmpy set.
Sessions register in a directory, one file per session named by its pid and start time (a
session that crashed is recognised and dropped), under a lock; `state` holds the originals.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import marker
from .errors import ZdtmError

ROOT = Path(os.environ.get("ZDTMPY_REGISTRY", "/run/zdtmpy"))
STATE = "original.json"
# A holder's work under the lock is a few steps with their own timeouts; a holder stopped
# (SIGSTOP, a debugger) must not stall every other session for ever.
LOCK_TIMEOUT = 300.0


@dataclass
class Shared:
    """What the registry holds, read under its lock; changes to `state` are saved."""
    state: dict[str, Any]
    alone: bool   # no other live session is registered (the caller's own entry aside)


class Registry:
    def __init__(self, root: Path | None = None, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.root = ROOT if root is None else root
        self.lock_timeout = lock_timeout
        me = marker.me()
        self.entry = self.root / f"session-{me.pid}-{me.start}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[Shared]:
        """The registry under its lock (held for the body: keep it short)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._lock(fd)
            shared = Shared(self._load(), not self._live_others())
            yield shared
            self._save(shared.state)
        finally:
            os.close(fd)

    def _lock(self, fd: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ZdtmError(
                        f"{self.root / '.lock'}: another zdtmpy session has held the machine's "
                        f"session registry for over {self.lock_timeout:.0f} s (is one stopped? "
                        "`fuser -v` on the file names it)") from None
                time.sleep(0.02)

    def join(self) -> None:
        """Count this session as live (under locked())."""
        self.entry.write_text("")

    def leave(self) -> None:
        """This session no longer counts (under locked())."""
        with contextlib.suppress(OSError):
            self.entry.unlink()

    def _live_others(self) -> bool:
        return bool(self._live({self.entry.name}))

    def others(self) -> list[str]:
        """The entries of the other live sessions (under locked()), neither this process's
        nor an ancestor's: an xdist worker, or a project test, counts as the session that
        runs it. Entries of sessions that died are dropped."""
        return self._live({f"session-{pid}-{start}" for pid, start in _lineage()})

    def _live(self, skip: set[str]) -> list[str]:
        live = []
        for f in sorted(self.root.glob("session-*")):
            if f.name in skip:
                continue
            try:
                _, pid, start = f.name.split("-")
                alive = marker.start_time(int(pid)) == int(start)
            except ValueError:
                alive = False
            if alive:
                live.append(f.name)
            else:
                with contextlib.suppress(OSError):
                    f.unlink()  # a session that crashed: it no longer counts
        return live

    def _load(self) -> dict[str, Any]:
        """The recorded originals; a record that is not a JSON object counts as none."""
        try:
            state = json.loads((self.root / STATE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save(self, state: dict[str, Any]) -> None:
        path = self.root / STATE
        if not state:
            with contextlib.suppress(OSError):
                path.unlink()
            return
        tmp = path.with_name(f".{STATE}.{os.getpid()}")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)  # a crash never leaves half a record


def _lineage() -> list[tuple[int, int]]:
    """(pid, start time) of this process and its ancestors, up to the first one gone."""
    out: list[tuple[int, int]] = []
    pid = os.getpid()
    while pid > 0 and len(out) < 256:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            break
        fields = stat[stat.rindex(b")") + 2:].split()
        out.append((pid, int(fields[19])))
        pid = int(fields[1])
    return out
