"""The JSON report (`--zdtm-report FILE`): format, building records, loading and merging.

    {"format": "zdtmpy-report", "version": 1,
     "sessions": [{"shard": "1/2" | null, "items": N, "criu": {...},
                   "kernel": ..., "host": ..., "started": ..., "duration": ..., ...}],
     "items": [{"id": nodeid, "outcome": "passed", "duration": s, "test": ..., "mode": ...,
                "compression": ..., "acceleration": ..., "flavor": ..., "kernel": ...,
                "criu_bin": ..., "criu_version": ..., "stages": {stage: s},
                "image_bytes_before": ..., "image_bytes_after": ..., "image_ratio": ...,
                "failed_stage": ..., "message": ...}]}

A report may come from another machine: loading reads at most MAX_BYTES, checks every
field's type and names the file and the item of anything wrong.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZdtmError
from .properties import PREFIX, STAGE_PREFIX, STAGE_SUFFIX

Record = dict[str, Any]   # a JSON object of the report (an item or a session)

FORMAT = "zdtmpy-report"
VERSION = 1
MAX_BYTES = 64 << 20
MAX_MESSAGE = 2000
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
TEXT_FIELDS = ("test", "mode", "compression", "flavor", "kernel", "criu_bin", "criu_version",
               "failed_stage", "message")
NUMBER_FIELDS = ("duration", "acceleration", "image_bytes_before", "image_bytes_after",
                 "image_ratio")


class ReportError(ZdtmError):
    """A JSON report that cannot be read, or reports that cannot be merged."""


def item_record(nodeid: str, outcome: str, duration: float,
                properties: Iterable[tuple[object, Any]], message: str = "") -> Record:
    """One item's record from its junit properties (the same pairs the XML carries)."""
    rec: dict[str, Any] = {"id": nodeid, "outcome": outcome, "duration": round(duration, 6),
                           "stages": {}}
    for name, value in properties:
        if not isinstance(name, str) or not name.startswith(PREFIX):
            continue
        if name.startswith(STAGE_PREFIX) and name.endswith(STAGE_SUFFIX):
            rec["stages"][name[len(STAGE_PREFIX):-len(STAGE_SUFFIX)]] = value
        else:
            rec[name[len(PREFIX):]] = value
    if message:
        rec["message"] = message[:MAX_MESSAGE]
    return rec


@dataclass
class Report:
    """One run: possibly merged from several shards' files."""

    sessions: list[Record] = field(default_factory=list)
    items: dict[str, Record] = field(default_factory=dict)  # id -> record
    files: list[str] = field(default_factory=list)

    def to_json(self) -> Record:
        return {"format": FORMAT, "version": VERSION, "sessions": self.sessions,
                "items": list(self.items.values())}

    def completeness(self) -> str:
        """Whether the shards in this report add up to a whole run."""
        shards = [s.get("shard") for s in self.sessions]
        if len(self.sessions) == 1 and shards[0] is None:
            return "one unsharded session"
        named = [s for s in shards if s is not None]
        if len(named) != len(shards):
            return "a mix of sharded and unsharded sessions"
        totals = {s.split("/")[1] for s in named}
        seen = sorted({int(s.split("/")[0]) for s in named})
        if len(totals) != 1:
            return f"shards of different splits ({', '.join(named)})"
        n = int(totals.pop())
        missing = [k for k in range(1, n + 1) if k not in seen]
        if missing:
            return f"INCOMPLETE: shard(s) {', '.join(f'{k}/{n}' for k in missing)} missing"
        if len(seen) != len(shards):
            return f"shards given twice ({', '.join(named)})"
        return f"complete: {n}/{n} shards, {len(self.items)} items"


def _check_item(rec: Any, where: str) -> Record:
    if not isinstance(rec, dict):
        raise ReportError(f"{where}: expected an object, found {type(rec).__name__}")
    rid = rec.get("id")
    if not isinstance(rid, str) or not rid:
        raise ReportError(f"{where}: 'id' must be a non-empty string")
    where = f"{where} ({rid})"
    if rec.get("outcome") not in OUTCOMES:
        raise ReportError(f"{where}: 'outcome' is {rec.get('outcome')!r}, expected one of "
                          f"{', '.join(OUTCOMES)}")
    for key in TEXT_FIELDS:
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise ReportError(f"{where}: '{key}' must be a string")
    for key in NUMBER_FIELDS:
        if rec.get(key) is not None and not _is_number(rec[key]):
            raise ReportError(f"{where}: '{key}' must be a finite number")
    stages = rec.get("stages", {})
    if not isinstance(stages, dict):
        raise ReportError(f"{where}: 'stages' must be an object of stage: seconds")
    for name, secs in stages.items():
        if not _is_number(secs) or secs < 0:
            raise ReportError(f"{where}: stage {name!r} has duration {secs!r}, expected "
                              "seconds >= 0")
    return rec


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def load(path: str | Path) -> Report:
    """Read and check one report file."""
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO given as a report must not hang the reader
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ReportError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise ReportError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ReportError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a zdtmpy report")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReportError(f"{path}: not a zdtmpy report (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ReportError(f"{path}: report version {doc.get('version')!r}, this zdtmpy "
                          f"reads version {VERSION}")
    sessions, items = doc.get("sessions"), doc.get("items")
    if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
        raise ReportError(f"{path}: 'sessions' must be a list of objects")
    if not isinstance(items, list):
        raise ReportError(f"{path}: 'items' must be a list")
    for s in sessions:
        shard = s.get("shard")
        if shard is not None and not _valid_shard(shard):
            raise ReportError(f"{path}: session shard {shard!r} is not K/N")
    report = Report(sessions=sessions, files=[str(path)])
    for i, rec in enumerate(items):
        rec = _check_item(rec, f"{path}: item {i}")
        if rec["id"] in report.items:
            raise ReportError(f"{path}: item {rec['id']} appears twice")
        report.items[rec["id"]] = rec
    return report


def _valid_shard(text: Any) -> bool:
    if not isinstance(text, str) or text.count("/") != 1:
        return False
    k, n = text.split("/")
    return k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)


def merge(reports: list[Report]) -> Report:
    """The shards' reports as one run. An item in two of them is an error: the shards
    overlapped (or the same file was given twice)."""
    out = Report()
    origin: dict[str, str] = {}
    for rep in reports:
        out.sessions += rep.sessions
        out.files += rep.files
        for rid, rec in rep.items.items():
            if rid in out.items:
                raise ReportError(f"{rep.files[0]} and {origin[rid]} both hold item {rid}: "
                                  "overlapping shards, or one run given twice")
            out.items[rid] = rec
            origin[rid] = rep.files[0]
    return out


def load_all(paths: Iterable[str | Path]) -> Report:
    return merge([load(p) for p in paths])


def check_writable(path: str | Path) -> None:
    """Refuse at start-up, not after the run, a report path that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"--zdtm-report {path}: is a directory")
    if not path.resolve().parent.is_dir():
        raise ReportError(f"--zdtm-report {path}: directory {path.resolve().parent} "
                          "does not exist")


def write(path: str | Path, report: Report) -> None:
    """Write next to the target and rename: a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(report.to_json(), f, indent=1, sort_keys=True)
            f.write("\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
