"""A stream file indexed for random access: where each file's records are (serve reads
them in criu's order, not the stream's)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .streamformat import BLOCKS, DATA, OPEN, Header, StreamError, StreamReader


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
    payload's CRC is checked too (one full read), so every file but the pages is whole
    before criu sees any of it; a BLOCKS record's blocks are decoded (and so checked) as
    they are served, before any byte of that record reaches criu (servefeed)."""
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
        for fi in by_id.values():
            fi.size = reader.closed[fi.name]
        return StreamIndex(path, reader.header, files, reader.pos)
