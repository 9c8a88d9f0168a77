"""Visible-state comparison with upstream's rules for its own tests.

What test/zdtm.py's check_visible_state compares, and when: only static tests in the ns and
uns flavors (zdtm.py's get_visible_state returns nothing for flavor h, whose tests share the
host's view); per process, the set of open fd numbers, and the mappings merged by address
range and protection alone (an adjacent file mapping and anonymous one with the same
protection merge, the run keeping the first one's kind), with whether they are file-backed
(not the file's name: a deleted file is restored under a link name such as `NAME.cr_link`).
zdtmpy's own stricter comparison (procstate) would fail tests upstream passes for that
reason alone.
"""

from __future__ import annotations

from ..procstate import ProcState

FLAVORS = ("ns", "uns")  # where upstream compares at all


def comparable(subdir: str, flavor: str) -> bool:
    """Upstream compares static tests (transition ones move) in the ns and uns flavors."""
    return subdir == "static" and flavor in FLAVORS


def _maps(state: ProcState) -> list[tuple[int, int, str, bool]]:
    out: list[tuple[int, int, str, bool]] = []
    for start, end, perms, _offset, path in state.maps:
        filed = path.startswith("/")
        if out and out[-1][1] == start and out[-1][2] == perms:
            out[-1] = (out[-1][0], end, perms, out[-1][3])
        else:
            out.append((start, end, perms, filed))
    return out


def differences(before: dict[int, ProcState], after: dict[int, ProcState],
                limit: int = 10) -> list[str]:
    diffs = []
    for pid in sorted(set(before) | set(after)):
        if pid not in after:
            diffs.append(f"pid {pid}: missing after restore")
            continue
        if pid not in before:
            diffs.append(f"pid {pid}: not in the tree before the dump")
            continue
        b, a = _maps(before[pid]), _maps(after[pid])
        for m in [m for m in b if m not in a][:limit]:
            diffs.append(f"pid {pid}: mapping {m[0]:x}-{m[1]:x} {m[2]} lost")
        for m in [m for m in a if m not in b][:limit]:
            diffs.append(f"pid {pid}: mapping {m[0]:x}-{m[1]:x} {m[2]} appeared")
        fb = {fd for fd, _ in before[pid].fds}
        fa = {fd for fd, _ in after[pid].fds}
        if fb != fa:
            diffs.append(f"pid {pid}: fds {sorted(fb - fa)} lost, {sorted(fa - fb)} appeared")
    return diffs
