"""How far a compress-bench target is within reach on this machine: a floor under the wall
time of any codec doing the same job, measured in the same run.

* write floor: writing the bytes the output file holds (compressed size; for decompress the
  pages that are not all zero, the rest being holes) into a fresh file from a reused buffer,
  then fsync; the faster of two ways: everything first and then fsync (what `lz4` plus the
  reference's fsync does), and with the disk working as they are written (what zdtmpy's
  pages writer does, pagesout.WriteBehind: writeback started every WRITE_BEHIND bytes, a
  background flush every FLUSH_BEHIND; the fsync then waits for less). The first way alone
  came out ~1.4x slower than the second here, above what zdtmpy itself took, so floors
  measured that way only put targets out of reach that were not. One thread: buffered
  writes to one file are serialised on its inode lock, so more threads do not write it
  faster.
* CPU floor: the LZ4 library's own CPU seconds (python-lz4, one core, measured in memory
  on a sample of the pattern, scaled to the size) for the blocks that are not all zero,
  spread over every core.

bound = the reference's wall time / the larger floor (at most our own time: a floor measured
at another moment may come out above what we did): the best ratio to `lz4` that any
implementation could show here. A target above it is out of reach on this machine, whatever
the codec does; the table says so with the figures.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

WRITE_UNIT = 1 << 20


def write_floor(dirpath: Path, nbytes: int) -> float:
    """Wall seconds to write nbytes into a new file in dirpath and fsync it: the faster of
    writing everything before the fsync and starting the writeback as the bytes go."""
    return min(write_seconds(dirpath, nbytes, behind=False),
               write_seconds(dirpath, nbytes, behind=True))


def write_seconds(dirpath: Path, nbytes: int, behind: bool) -> float:
    """Wall seconds to write nbytes into a new file in dirpath, then fsync it. behind: the
    disk works while the bytes are written, as in the pages writer (pagesout.WriteBehind:
    writeback started every WRITE_BEHIND bytes, a background flush every FLUSH_BEHIND)."""
    from ..compress.pagesout import WriteBehind

    path = dirpath / "write-floor.tmp"
    buf = bytearray(os.urandom(min(WRITE_UNIT, max(nbytes, 1))))
    os.sync()
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    wb = WriteBehind(fd)
    try:
        t0 = time.perf_counter()
        done = 0
        while done < nbytes:
            done += os.pwrite(fd, memoryview(buf)[:nbytes - done], done)
            if behind:
                wb.wrote(done)
        wb.finish()
        os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        wb.cancel()
        os.close(fd)
        path.unlink()


def stored_bytes(path: Path) -> int:
    """The bytes a file holds (not its holes)."""
    st = path.stat()
    return min(st.st_size, st.st_blocks * 512)


def add_bounds(row: dict[str, Any], ref: dict[str, Any] | None, floors: dict[str, float],
               memory: dict[str, Any] | None, cpus: int) -> None:
    """Put each action's floor and bound into a result row (see the module docstring)."""
    bounds: dict[str, Any] = {}
    for action in ("compress", "decompress"):
        cpu_floor = None
        if memory is not None and memory.get("bytes"):
            lib = memory[action]["ceiling_data_cpu_s"] * row["bytes"] / memory["bytes"]
            cpu_floor = lib / max(1, cpus)
        write = floors.get(action)
        floor = max(x for x in (write, cpu_floor, 0.0) if x is not None)
        # measured at another moment than our run, a floor can come out above the time we
        # took (memory the VM had to fault in, other work): what we did is possible, so
        # the floor is at most our time, and the bound at least the ratio we reached
        floor = min(floor, row[action]["seconds"])
        ref_s = ref[action]["seconds"] if ref else None
        bounds[action] = {"write_floor_s": write, "cpu_floor_s": cpu_floor,
                          "floor_s": floor or None,
                          "bound": ref_s / floor if ref_s and floor else None}
    row["bounds"] = bounds


def verdict(met: bool | None, bound: float | None, target: float) -> str:
    """ok / MISS / out of reach (the bound is below the target)."""
    if met is None:
        return "n/a"
    if met:
        return "ok"
    if bound is not None and bound < target:
        return "out of reach"
    return "MISS"
