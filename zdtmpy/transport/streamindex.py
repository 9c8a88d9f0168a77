"""A stream file indexed for random access: where each file's records are (serve reads
them in criu's order, not the stream's)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .crc import crc32
from .streamformat import (
    BLOCKS,
    CRC,
    DATA,
    OPEN,
    RECORD_HEAD,
    TYPE_NAMES,
    Header,
    Record,
    StreamError,
    StreamReader,
)


@dataclass
class FileIndex:
    name: str
    size: int = 0
    chunks: list[int] = field(default_factory=list)  # record positions of its DATA/BLOCKS


@dataclass
class StreamIndex:
    path: Path
    header: Header
    files: dict[str, FileIndex]
    stream_bytes: int


def index_stream(path: str | os.PathLike[str], verify: bool = True) -> StreamIndex:
    """Scan a stream file: every record's place, sizes, the end record. With verify, every
    payload's CRC is checked too (in the pool, beside the scan), so every file but the
    pages is whole before criu sees any of it; a BLOCKS record's blocks are decoded (and so
    checked) as they are served, before any byte of that record reaches criu (servefeed)."""
    path = Path(path)
    files = {}
    by_id = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise StreamError(f"{path}: cannot open stream: {exc.strerror}") from None
    with f:
        reader = StreamReader(f, str(path), skip_data=True)
        for rec in _crc_checked(reader, f.fileno()) if verify else reader:
            if rec.type == OPEN:
                by_id[rec.file_id] = files[rec.name] = FileIndex(rec.name)
            elif rec.type in (DATA, BLOCKS):
                fi = by_id[rec.file_id]
                fi.chunks.append(rec.pos)
        for fi in by_id.values():
            fi.size = reader.closed[fi.name]
        return StreamIndex(path, reader.header, files, reader.pos)


def _crc_checked(reader: StreamReader, fd: int) -> Iterator[Record]:
    """The reader's records (it skips DATA/BLOCKS payloads), each data record's CRC checked
    by the pool a few records ahead. Problems come in stream order, as from a reader that
    checks as it goes: a record's bad checksum before anything the scan found after it
    (or in that record's blocks header or place)."""
    from ..compress.pipeline import ordered_map

    scan_error: list[StreamError] = []

    def scanned() -> Iterator[tuple[Record | None, tuple[int, int, int, int, int]]]:
        try:
            for rec in reader:
                yield rec, (rec.pos, rec.type, rec.file_id, rec.offset, rec.length)
        except StreamError as exc:
            scan_error.append(exc)
            if reader.current is not None:   # the record the scan stopped in: its CRC first
                yield None, reader.current

    def crc_ok(item: tuple[Record | None, tuple[int, int, int, int, int]]) -> bool:
        start, rtype, _, _, length = item[1]
        if rtype not in (DATA, BLOCKS):
            return True   # the reader checked it whole
        need = RECORD_HEAD.size + length + CRC.size
        body = os.pread(fd, need, start)
        if len(body) < need:
            return True   # truncated: the scan says so
        crc = crc32(memoryview(body)[RECORD_HEAD.size:need - CRC.size],
                         crc32(memoryview(body)[:RECORD_HEAD.size]))
        return bool(crc == CRC.unpack_from(body, need - CRC.size)[0])

    for (rec, (start, rtype, fid, offset, _)), ok in ordered_map(
            lambda item: (item, crc_ok(item)), scanned()):
        if not ok:
            name = reader.names.get(fid, f"file #{fid}")
            raise StreamError(f"{reader.where}: checksum mismatch in a {TYPE_NAMES[rtype]} "
                              f"record of {name} (file offset {offset}): the stream is "
                              f"corrupt at byte {start}")
        if rec is not None:
            yield rec
    if scan_error:
        raise scan_error[0]
