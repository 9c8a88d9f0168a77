"""Visible-state comparison with upstream's rules for its own tests.

What test/zdtm.py's check_visible_state compares, and when: only static tests in the ns and
uns flavors (zdtm.py's get_visible_state returns nothing for flavor h, whose tests share the
host's view); per process, the set of open fd numbers, and the mappings merged by address
range and protection alone (an adjacent file mapping and anonymous one with the same
protection merge, the run keeping the first one's kind), with whether they are file-backed
(not the file's name: a deleted file is restored under a link name such as `NAME.cr_link`).
zdtmpy's own stricter comparison (procstate) would fail tests upstream passes for that
reason alone.

Which processes: zdtm.py means to compare every process of the test's PID namespace, but its
get_visible_state filters the /proc listing with a regex variable that the loop body rebinds
(to its mountinfo pattern) after the first pid, so it compares the first pid only: ns pid 1,
the namespace's init from upstream's ns.c, never the test's own processes. Differences there
fail the item as under zdtm.py; the others are reported as an UncheckedDifference warning
(`-W error::zdtmpy.corpus.state.UncheckedDifference` makes them fail too). Two tests show
why this matters on a busy machine: pthread_timers gets a second glibc thread stack when the
timer fires during criu's last restore steps (its restored pending signal and the new expiry
arrive together, two SIGEV_THREAD threads overlap); fd_from_pidfd's child closes a pipe end
after the test says it is ready.
"""

from __future__ import annotations

from ..procstate import MountEntry, ProcState, per_pid

FLAVORS = ("ns", "uns")  # where upstream compares at all


class UncheckedDifference(UserWarning):
    """A restored process other than the one zdtm.py compares differs (not a failure)."""


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


def _multiset_minus(a: tuple[MountEntry, ...], b: tuple[MountEntry, ...]) -> list[MountEntry]:
    """What a holds more often than b (a mount table may list one entry twice)."""
    rest = list(b)
    out = []
    for m in a:
        if m in rest:
            rest.remove(m)
        else:
            out.append(m)
    return out


def differences(before: dict[int, ProcState], after: dict[int, ProcState],
                limit: int = 10) -> list[str]:
    def compare(pid: int, b_state: ProcState, a_state: ProcState) -> list[str]:
        diffs = []
        b, a = _maps(b_state), _maps(a_state)
        for m in [m for m in b if m not in a][:limit]:
            diffs.append(f"pid {pid}: mapping {m[0]:x}-{m[1]:x} {m[2]} lost")
        for m in [m for m in a if m not in b][:limit]:
            diffs.append(f"pid {pid}: mapping {m[0]:x}-{m[1]:x} {m[2]} appeared")
        fb = {fd for fd, _ in b_state.fds}
        fa = {fd for fd, _ in a_state.fds}
        if fb != fa:
            diffs.append(f"pid {pid}: fds {sorted(fb - fa)} lost, {sorted(fa - fb)} appeared")
        lost, new = _multiset_minus(b_state.mounts, a_state.mounts), \
            _multiset_minus(a_state.mounts, b_state.mounts)
        for what, mounts in (("lost", lost), ("appeared", new)):
            for root, point, opts, shared, master in mounts[:limit]:
                flags = " shared" * shared + " master" * master
                diffs.append(f"pid {pid}: mount {point} (root {root}, {opts}{flags}) {what}")
        return diffs

    return per_pid(before, after, compare)


def split(before: dict[int, ProcState], after: dict[int, ProcState],
          limit: int = 10) -> tuple[list[str], list[str]]:
    """(differences in the process zdtm.py compares: the lowest pid, the namespace's init;
    differences in the others)."""
    if not before:
        return differences(before, after, limit), []
    first = min(before)
    checked = differences({first: before[first]},
                          {first: after[first]} if first in after else {}, limit)
    rest = differences({p: s for p, s in before.items() if p != first},
                       {p: s for p, s in after.items() if p != first}, limit)
    return checked, rest
