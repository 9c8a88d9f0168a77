"""Image file framing: magics, then entries each as u32 little-endian length + protobuf bytes."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

from ..errors import ImageError
from .safeopen import read_regular

COMMON_MAGIC = 0x54564319
SERVICE_MAGIC = 0x55105940  # stats-dump / stats-restore use it instead of the common one

INVENTORY_MAGIC = 0x58313116
PSTREE_MAGIC = 0x50273030
PAGEMAP_MAGIC = 0x56084025
CORE_MAGIC = 0x55053847
MM_MAGIC = 0x57492820
STATS_MAGIC = 0x57093306
FILES_MAGIC = 0x56303138
MEMFD_INODE_MAGIC = 0x48453499

MAGIC_NAMES = {
    INVENTORY_MAGIC: "inventory", PSTREE_MAGIC: "pstree", PAGEMAP_MAGIC: "pagemap",
    CORE_MAGIC: "core", MM_MAGIC: "mm", STATS_MAGIC: "stats",
}

_U32 = struct.Struct("<I")


class RawImage:
    """An image file split into its magic and undecoded entries (bytes)."""

    __slots__ = ("entries", "magic", "path")

    def __init__(self, path: str, magic: int, entries: list[bytes]) -> None:
        self.path, self.magic, self.entries = path, magic, entries


def _prefix(magic: int) -> bytes:
    if magic == INVENTORY_MAGIC:
        return b""  # the inventory carries no common magic
    if magic == STATS_MAGIC:
        return _U32.pack(SERVICE_MAGIC)
    return _U32.pack(COMMON_MAGIC)


def parse_image(data: bytes, name: str, expect: int | None = None) -> RawImage:
    """Split image bytes into a RawImage; `name` is used in error messages."""
    if len(data) < 4:
        raise ImageError(f"{name}: too short for an image magic ({len(data)} bytes)")
    first = _U32.unpack_from(data, 0)[0]
    if first in (COMMON_MAGIC, SERVICE_MAGIC):
        if len(data) < 8:
            raise ImageError(f"{name}: truncated after the leading magic")
        magic, pos = _U32.unpack_from(data, 4)[0], 8
    elif first == INVENTORY_MAGIC:
        magic, pos = first, 4
    else:
        raise ImageError(f"{name}: unknown image magic {first:#010x}")
    if expect is not None and magic != expect:
        raise ImageError(f"{name}: magic {magic:#010x} is not the expected "
                         f"{MAGIC_NAMES.get(expect, '?')} magic {expect:#010x}")
    if data[:pos - 4] != _prefix(magic):  # criu reads stats only after the service magic
        raise ImageError(f"{name}: leading magic {first:#010x} does not belong to a "
                         f"{MAGIC_NAMES.get(magic, hex(magic))} image")
    entries: list[bytes] = []
    end = len(data)
    while pos < end:
        if pos + 4 > end:
            raise ImageError(f"{name}: entry {len(entries)}: truncated length field")
        (size,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + size > end:
            raise ImageError(f"{name}: entry {len(entries)}: {size} bytes announced, "
                             f"{end - pos} left in the file")
        entries.append(data[pos:pos + size])
        pos += size
    return RawImage(name, magic, entries)


def read_image(path: str | os.PathLike[str], expect: int | None = None) -> RawImage:
    """Read an image file (never a pages file) into a RawImage."""
    return parse_image(read_regular(path), str(path), expect)


def encode_image(magic: int, entries: Iterable[Any]) -> bytes:
    """Bytes of an image: magic(s) then each entry (bytes or a protobuf message)."""
    parts: list[bytes | bytearray] = [_prefix(magic), _U32.pack(magic)]
    for entry in entries:
        raw = entry if isinstance(entry, (bytes, bytearray)) else entry.SerializeToString()
        parts.append(_U32.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode_entry(entry: Any) -> bytes:
    raw: bytes = entry.SerializeToString()
    return _U32.pack(len(raw)) + raw


def write_image(path: str | os.PathLike[str], magic: int, entries: Iterable[Any],
                fsync: bool = False) -> None:
    """Write an image file; entries are bytes or messages."""
    data = encode_image(magic, entries)
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
