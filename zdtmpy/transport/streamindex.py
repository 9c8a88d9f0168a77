"""A stream file indexed for random access: where each file's records are (serve reads
them in criu's order, not the stream's)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .streamformat import (
    BLOCKS,
    CRC,
    DATA,
    MAX_PAYLOAD,
    OPEN,
    RECORD_HEAD,
    Header,
    Record,
    StreamError,
    StreamReader,
    read_exact,
)


@dataclass
class FileIndex:
    name: str
    size: int = 0
    chunks: list = field(default_factory=list)  # record positions of its DATA/BLOCKS


@dataclass
class StreamIndex:
    path: Path
    header: Header
    files: dict  # name -> FileIndex
    stream_bytes: int


def index_stream(path, verify=True):
    """Scan a stream file: every record's place, sizes, the end record. With verify, every
    payload's CRC is checked too (one full read), so serving never meets corruption late."""
    path = Path(path)
    files = {}
    by_id = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise StreamError(f"{path}: cannot open stream: {exc.strerror}") from None
    with f:
        reader = StreamReader(f, str(path), skip_data=not verify)
        for rec in reader:
            if rec.type == OPEN:
                by_id[rec.file_id] = files[rec.name] = FileIndex(rec.name)
            elif rec.type in (DATA, BLOCKS):
                fi = by_id[rec.file_id]
                fi.chunks.append(rec.pos)
                if verify and rec.type == BLOCKS:
                    rec.data(str(path))  # a CRC-valid record can still hold a bad block
        for fi in by_id.values():
            fi.size = reader.closed[fi.name]
        return StreamIndex(path, reader.header, files, reader.pos)


def read_record(f, pos, where):
    """The checked DATA/BLOCKS record at `pos` of an open stream file (payload not decoded)."""
    f.seek(pos)
    head = read_exact(f, RECORD_HEAD.size)
    if len(head) < RECORD_HEAD.size:
        raise StreamError(f"{where}: truncated record header at byte {pos}")
    rtype, _, _, fid, offset, length = RECORD_HEAD.unpack(head)
    if rtype not in (DATA, BLOCKS) or length > MAX_PAYLOAD:
        raise StreamError(f"{where}: record at byte {pos} is not a data record any more")
    body = read_exact(f, length + CRC.size)
    if len(body) < length + CRC.size:
        raise StreamError(f"{where}: truncated data record at byte {pos}")
    payload = body[:length]
    if CRC.unpack_from(body, length)[0] != zlib.crc32(payload, zlib.crc32(head)):
        raise StreamError(f"{where}: checksum mismatch in the record at byte {pos} "
                          f"(file offset {offset}): the stream is corrupt")
    return Record(rtype, fid, offset, payload, pos, length=length)


def iter_file(f, fi, where):
    """The bytes of one indexed file, record by record; blocks are decoded in a thread pool
    (LZ4 releases the GIL) while the next records are read."""
    from ..compress.pipeline import ordered_map

    where = f"{where}: {fi.name}"

    def records():
        for pos in fi.chunks:
            rec = read_record(f, pos, where)
            rec.name = fi.name
            yield rec

    return ordered_map(lambda rec: rec.data(where), records())


