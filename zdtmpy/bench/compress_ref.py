"""bench compress's reference: the `lz4` command-line tool on the same pages file, each
output fsynced (the fsync timed too), and the timed child runner both sides use."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import BenchError, Record
from .patterns import file_crc


def run_timed(argv: list[str], env: dict[str, str] | None = None
              ) -> tuple[int, bytes, bytes, float, int]:
    """Run argv to completion: (exit code, stdout bytes, stderr bytes, wall s, maxrss KiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=env)
        except OSError as exc:
            raise BenchError(f"cannot run {argv[0]}: {exc.strerror}") from None
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), wall, ru.ru_maxrss


def warm(path: Path) -> None:
    """Read path through, untimed: every timed reader then finds all of it in the page cache,
    holes included. A hole read for the first time costs the kernel a fresh zero-filled
    page (about 0.1 CPU s per GiB of holes here), and which reader came first depended on
    the order of the run: lz4 and region compress read files fresh from a decompression,
    per-page compress the one lz4 had just read."""
    buf = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def lz4_command(tool: str) -> list[str] | None:
    """The reference command prefix, or None when the tool is missing."""
    exe = shutil.which(tool)
    if exe is None:
        return None
    # -T (threads) appeared in lz4 1.10; older tools are single-threaded anyway
    rc = run_timed([exe, "-1", "-T1", "-q", "-c", "/dev/null"])[0]
    return [exe, "-1", "-T1"] if rc == 0 else [exe, "-1"]


def lz4_version(tool: str) -> str | None:
    exe = shutil.which(tool)
    if exe is None:
        return None
    _, out, err, _, _ = run_timed([exe, "-V"])
    m = re.search(rb"v(\d+\.\d+\.\d+)", out + err)
    return m.group(1).decode() if m else None


# argv: OUTPUT CMD...: run CMD (wall time, maxrss of CMD via wait4), then fsync OUTPUT
_TIMER = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, ru = os.wait4(pid, 0)
t1 = time.perf_counter()
rc = os.waitstatus_to_exitcode(status)
if rc:
    sys.exit(rc)
fd = os.open(out, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
print(json.dumps({"seconds": t1 - t0, "fsync": time.perf_counter() - t1,
                  "cpu": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss}))
"""


def lz4_reference(cmd: list[str], src: Path, work: Path, crc: int) -> Record:
    comp, back = work / "ref.lz4", work / "ref.out"
    res: dict[str, Any] = {}
    for action, argv, out in (("compress", [*cmd, "-f", "-q", str(src), str(comp)], comp),
                              ("decompress", [cmd[0], "-d", "-f", "-q", str(comp), str(back)],
                               back)):
        warm(src if action == "compress" else comp)
        os.sync()
        # run through a fresh small interpreter: a child forked from this (large) process
        # would count our resident pages in its own maximum RSS until it execs
        rc, out_text, err, _, _ = run_timed([sys.executable, "-c", _TIMER, str(out), *argv])
        if rc != 0:
            raise BenchError(f"{' '.join(argv)} failed (exit {rc}): "
                             f"{err.decode(errors='replace').strip()}")
        rec = json.loads(out_text.decode().strip().splitlines()[-1])
        res[action] = {"seconds": rec["seconds"] + rec["fsync"],
                       "seconds_no_fsync": rec["seconds"], "cpu_seconds": rec["cpu"],
                       "rss_kib": rec["maxrss"]}
    res["bytes_after"] = comp.stat().st_size
    if file_crc(back) != crc:
        raise BenchError(f"lz4 round trip of {src} does not give the original bytes")
    comp.unlink()
    back.unlink()
    return res
