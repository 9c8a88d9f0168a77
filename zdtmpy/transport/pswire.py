"""The page-server wire format (FORMAT.md section 6): command numbers, the two header
layouts, dst_id encoding and the checks every header passes before anything is allocated.
Pure functions and values: no sockets, no files."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import PageServerError
from ..images.pagemap import PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT

# Commands (low 16 bits of `cmd`); page flags travel in the high 16 bits (ADD_F* only).
ADD, HOLE, OPEN, OPEN2, PARENT, ADD_F, GET, ADD_F_COMPRESSED = range(1, 9)
CLOSE, FORCE_CLOSE = 0x1023, 0x1024
COMMAND_NAMES = {ADD: "ADD", HOLE: "HOLE", OPEN: "OPEN", OPEN2: "OPEN2", PARENT: "PARENT",
                 ADD_F: "ADD_F", GET: "GET", ADD_F_COMPRESSED: "ADD_F_COMPRESSED",
                 CLOSE: "CLOSE", FORCE_CLOSE: "FORCE_CLOSE"}
TYPE_PID, TYPE_SHMEM = 1, 2
PAGES_ID_BASE = 0x10000  # criu's page server: pages ids 1 + 0x10000, 2 + 0x10000, ...
WIRE_FLAGS = PE_PARENT | PE_LAZY | PE_PRESENT

# Limits. Real criu sends at most one page-pipe buffer per ADD_F (~1000 pages); these are far
# above that and only keep a hostile peer from exhausting disk or memory.
MAX_PAYLOAD_PAGES = 1 << 20      # 4 GiB of payload in one entry (streamed, not buffered)
MAX_COMPRESSED_PAGES = 1 << 14   # ADD_F_COMPRESSED is buffered per entry: <= 64 MiB
MAX_GET_PAGES = 1024             # pages answered per GET (criu accepts fewer than asked)
MAX_PAGEMAPS = 1 << 16           # pagemaps one session may open (criu: one per task / shmem)
ADDR_LIMIT = 1 << 57             # no user address space reaches this (5-level paging: 2^56)


@dataclass(frozen=True)
class Header:
    command: int
    flags: int
    nr_pages: int
    vaddr: int
    dst_id: int

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"command {self.command:#x}")

    def __str__(self) -> str:
        return (f"{self.name} flags={self.flags:#x} nr_pages={self.nr_pages} "
                f"vaddr={self.vaddr:#x} dst_id={self.dst_id:#x}")


class HeaderLayout:
    """Header layout: 24 bytes (criu <= 4.1, u32 nr_pages) or 32 bytes (4.2+, u64 nr_pages
    after 4 bytes of padding). Host byte order, as criu sends its struct as is."""

    def __init__(self, size: int) -> None:
        if size == 24:
            self._s = struct.Struct("=IIQQ")
        elif size == 32:
            self._s = struct.Struct("=IIQQQ")
        else:
            raise PageServerError(f"page-server header size must be 24 or 32, not {size}")
        self.size = size

    def unpack(self, data: bytes | bytearray | memoryview) -> Header:
        if self.size == 24:
            cmd, nr, vaddr, dst = self._s.unpack(data)
        else:
            cmd, _pad, nr, vaddr, dst = self._s.unpack(data)
        return Header(cmd & 0xFFFF, cmd >> 16, nr, vaddr, dst)

    def pack(self, command: int, flags: int, nr_pages: int, vaddr: int, dst_id: int) -> bytes:
        cmd = (flags << 16) | command
        if self.size == 24:
            return self._s.pack(cmd, nr_pages, vaddr, dst_id)
        return self._s.pack(cmd, 0, nr_pages, vaddr, dst_id)

    def mismatch_hint(self) -> str:
        """What to suspect when a header is cut short: the other layout."""
        other = 24 if self.size == 32 else 32
        who = "criu <= 4.1" if other == 24 else "criu >= 4.2"
        return f" (is the peer {who}, which sends {other}-byte headers?)"


def header_size_for(version: tuple[int, ...]) -> int:
    """The header criu `version` (a tuple) speaks: u64 nr_pages from 4.2 on."""
    return 32 if tuple(version) >= (4, 2) else 24


def pagemap_for(dst_id: int) -> str:
    """dst_id = id << 8 | type -> the pagemap file it names."""
    kind, ident = dst_id & 0xFF, dst_id >> 8
    if kind == TYPE_PID:
        if not 0 < ident < 1 << 32:
            raise PageServerError(f"dst_id {dst_id:#x}: pid {ident} out of range")
        return f"pagemap-{ident}.img"
    if kind == TYPE_SHMEM:
        return f"pagemap-shmem-{ident}.img"
    raise PageServerError(f"dst_id {dst_id:#x}: unknown pagemap type {kind} "
                          f"(expected {TYPE_PID} pid or {TYPE_SHMEM} shmem)")


def encode_dst(name_or_pid: int | str, shmem: bool = False) -> int:
    return (int(name_or_pid) << 8) | (TYPE_SHMEM if shmem else TYPE_PID)


def check_no_flags(h: Header) -> None:
    if h.flags:
        raise PageServerError(f"{h}: flags are only valid with ADD_F, got {h.flags:#x}")


def check_range(h: Header) -> None:
    """A positive page count at a page-aligned address, ending inside user space."""
    if h.nr_pages == 0:
        raise PageServerError(f"{h}: nr_pages is 0")
    if h.vaddr % PAGE_SIZE:
        raise PageServerError(f"{h}: vaddr is not page aligned")
    if h.vaddr + h.nr_pages * PAGE_SIZE > ADDR_LIMIT:
        raise PageServerError(f"{h}: range ends beyond any user address space")


def check_page_flags(h: Header, flags: int) -> None:
    """Page flags of an entry command: known ones, never PRESENT and PARENT together."""
    if flags & ~WIRE_FLAGS:
        raise PageServerError(f"{h}: unknown page flags {flags & ~WIRE_FLAGS:#x} "
                              "(expected PE_PARENT|PE_LAZY|PE_PRESENT)")
    if flags & PE_PRESENT and flags & PE_PARENT:
        raise PageServerError(f"{h}: PE_PRESENT and PE_PARENT together")


def entry_flags(h: Header) -> int:
    """The pagemap flags an entry command means (ADD and HOLE predate ADD_F's flags)."""
    if h.command == ADD:
        return PE_PRESENT
    if h.command == HOLE:
        return PE_PARENT
    return h.flags
