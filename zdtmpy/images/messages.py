"""Message classes built at run time from the .proto files kept in zdtmpy/images/proto."""

import functools
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from ..errors import ImageError
from .protoparse import load_messages

# a decoded or new message: its class is built at run time, so mypy cannot know its fields
Message = Any

PROTO_DIR = Path(__file__).with_name("proto")
_FILES = ("inventory.proto", "pagemap.proto", "pstree.proto", "mm.proto", "files.proto",
          "stats.proto")

# Python name -> message name in the .proto files
_NAMES = {
    "InventoryEntry": "inventory_entry",
    "PagemapHead": "pagemap_head",
    "PagemapEntry": "pagemap_entry",
    "PagemapEntryV41": "pagemap_entry_v41",
    "PstreeEntry": "pstree_entry",
    "MmEntry": "mm_entry",
    "VmaEntry": "vma_entry",
    "FileEntry": "file_entry",
    "RegFileEntry": "reg_file_entry",
    "MemfdInodeEntry": "memfd_inode_entry",
    "StatsEntry": "stats_entry",
}


@functools.cache
def _classes() -> dict[str, Any]:
    return load_messages({name: (PROTO_DIR / name).read_text() for name in _FILES})


def __getattr__(name: str) -> Any:  # messages.PagemapEntry etc., loaded on first use
    if name in _NAMES:
        return _classes()[_NAMES[name]]
    raise AttributeError(name)


def decode(cls: Any, data: bytes | bytearray | memoryview, where: str) -> Any:
    """Parse one entry; `where` (e.g. "pagemap-1.img entry 3") goes into the error."""
    msg = cls()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise ImageError(f"{where}: cannot parse {cls.DESCRIPTOR.name}: {exc}") from None
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors())
        raise ImageError(f"{where}: {cls.DESCRIPTOR.name} lacks required field(s) {missing}")
    return msg
