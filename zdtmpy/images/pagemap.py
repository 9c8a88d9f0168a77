"""Pagemap files: normalised entries and where each entry's payload lives in the pages file."""

from __future__ import annotations

import bisect
import itertools
import os
import re
from typing import Any, Union

from ..codec.spec import MAX_REGION_BYTES as MAX_REGION_BYTES
from ..codec.spec import PAGE_SIZE as PAGE_SIZE
from ..errors import ImageError
from . import messages
from .framing import PAGEMAP_MAGIC, read_image
from .safeopen import regular_size

PE_PARENT = 1
PE_LAZY = 2
PE_PRESENT = 4
PE_PAYLOAD_ALIGNED = 8
KNOWN_FLAGS = PE_PARENT | PE_LAZY | PE_PRESENT | PE_PAYLOAD_ALIGNED
U32_MAX = 0xFFFFFFFF

# the names criu writes: decimal without leading zeros (pagemap-03290.img is not pid 3290's)
_NAME = re.compile(r"pagemap-(?:(shmem)-)?(0|[1-9]\d*)\.img")
LOOSE_NAME = re.compile(r"pagemap-(?:shmem-)?\d+\.img")


PagemapKey = Union[int, tuple[str, int]]   # a pid, or ("shmem", id)


def pagemap_key(name: str) -> PagemapKey | None:
    """pagemap-42.img -> 42, pagemap-shmem-7.img -> ("shmem", 7); None for other names."""
    m = _NAME.fullmatch(name)
    if not m:
        return None
    return ("shmem", int(m.group(2))) if m.group(1) else int(m.group(2))


def pagemap_name(key: PagemapKey) -> str:
    return f"pagemap-shmem-{key[1]}.img" if isinstance(key, tuple) else f"pagemap-{key}.img"


def entry_nr_pages(msg: Any) -> int:
    # 4.2+ writes the real count in field 5; 4.1 only has field 2
    return int(msg.nr_pages if msg.HasField("nr_pages") else msg.compat_nr_pages)


def set_entry_nr_pages(msg: Any, n: int) -> None:
    """Store a page count where the entry keeps it: field 5 when the entry already uses it
    (or must), else field 2. With field 5, field 2 keeps its value: criu 4.2 writes it as 0
    and a rewrite must give back equal messages."""
    if msg.HasField("nr_pages") or n > U32_MAX:
        msg.nr_pages = n
        if not msg.HasField("compat_nr_pages"):
            msg.compat_nr_pages = 0  # required field: present, as criu 4.2 writes it
    else:
        msg.compat_nr_pages = n


def entry_flags(msg: Any) -> int:
    """Legacy normalisation: no flags means PE_PRESENT; in_parent means PE_PARENT."""
    flags: int = msg.flags if msg.HasField("flags") else PE_PRESENT
    if msg.HasField("in_parent") and msg.in_parent:
        flags = (flags & ~PE_PRESENT) | PE_PARENT
    return flags


def round_up(n: int, to: int = PAGE_SIZE) -> int:
    return -(-n // to) * to


class Entry:
    """One pagemap entry, normalised, with its payload position (present entries only)."""

    __slots__ = (
        "_block_offsets",
        "block_pages",
        "flags",
        "index",
        "length",
        "msg",
        "nr_pages",
        "offset",
        "sizes",
        "total",
        "vaddr",
    )

    def __init__(self, index: int, msg: Any) -> None:
        self.index = index
        self.msg = msg
        self.vaddr: int = msg.vaddr
        self.nr_pages = entry_nr_pages(msg)
        self.flags = entry_flags(msg)
        has_meta = (len(msg.compressed_size) > 0 or msg.HasField("total_compressed_size")
                    or msg.region_pages > 0)
        # compression metadata (fields 6-8), None on plain entries
        self.sizes: list[int] | None = msg.compressed_size[:] if has_meta else None
        self.total: int | None = msg.total_compressed_size if has_meta else None
        self.block_pages: int = (msg.region_pages or 1) if has_meta else 1
        self.offset: int | None = None  # set by layout()
        self.length = 0
        self._block_offsets: list[int] | None = None

    @property
    def end(self) -> int:
        return self.vaddr + self.nr_pages * PAGE_SIZE

    @property
    def present(self) -> bool:
        return bool(self.flags & PE_PRESENT)

    @property
    def compressed(self) -> bool:
        """True when the entry carries compression metadata (fields 6-8)."""
        return self.sizes is not None

    @property
    def nblocks(self) -> int:
        return -(-self.nr_pages // self.block_pages) if self.compressed else self.nr_pages

    def block_bytes(self, i: int) -> int:
        """Decoded size of block i (the last block of an entry may be shorter)."""
        bp = self.block_pages if self.compressed else 1
        return min(bp, self.nr_pages - i * bp) * PAGE_SIZE

    @property
    def block_offsets(self) -> list[int]:
        """Offsets of each stored block relative to the entry start, plus the end."""
        if self._block_offsets is None:
            self._block_offsets = [0, *itertools.accumulate(self.sizes or ())]
        return self._block_offsets


class Pagemap:
    """A parsed pagemap file of one layer."""

    def __init__(self, path: str, head: Any, entries: list[Entry]) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.key = pagemap_key(self.name)
        self.head = head
        self.pages_id: int = head.pages_id
        self.entries = entries
        self.payload_size = layout(entries)
        self._starts_cache: list[int] | None = None

    @property
    def pages_name(self) -> str:
        return f"pages-{self.pages_id}.img"

    @property
    def pages_path(self) -> str:
        return os.path.join(os.path.dirname(self.path), self.pages_name)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pagemap:
        raw = read_image(path, PAGEMAP_MAGIC)
        if not raw.entries:
            raise ImageError(f"{path}: pagemap has no pagemap_head")
        head = messages.decode(messages.PagemapHead, raw.entries[0], f"{path}: head")
        entries: list[Entry] = []
        for i, data in enumerate(raw.entries[1:]):
            msg = messages.decode(messages.PagemapEntry, data, f"{path}: entry {i}")
            entries.append(Entry(i, msg))
        return cls(str(path), head, entries)

    def find(self, vaddr: int) -> Entry | None:
        """Entry covering vaddr, or None (entries are sorted: binary search)."""
        i = bisect.bisect_right(self._starts(), vaddr)
        if i and self.entries[i - 1].end > vaddr:
            return self.entries[i - 1]
        return None

    def next_start(self, vaddr: int) -> int | None:
        """Start of the first entry beginning after vaddr, or None."""
        starts = self._starts()
        i = bisect.bisect_right(starts, vaddr)
        return starts[i] if i < len(starts) else None

    def _starts(self) -> list[int]:
        if self._starts_cache is None:
            self._starts_cache = [e.vaddr for e in self.entries]
        return self._starts_cache

    def problems(self) -> list[tuple[int | None, str]]:
        """Structural problems, [(entry index or None, text)]; no payload bytes are read."""
        out: list[tuple[int | None, str]] = []
        prev_end: int | None = None
        for e in self.entries:
            out.extend((e.index, text) for text in entry_problems(e))
            if prev_end is not None and e.vaddr < prev_end:
                text = (f"vaddr {e.vaddr:#x} is below the end {prev_end:#x} of the previous "
                        "entry (entries must be sorted, non-overlapping)")
                out.append((e.index, text))
            prev_end = max(prev_end or 0, e.end)
        return out

    def payload_problem(self) -> str | None:
        """A text when the computed payload size differs from the pages file size, else None."""
        try:
            size = regular_size(self.pages_path)
        except ImageError as exc:
            return str(exc).replace(f"{self.pages_path}: ", f"{self.pages_name}: ")
        if size is None:
            if self.payload_size == 0:
                return None  # nothing to read, a missing empty pages file is harmless
            return f"{self.pages_name}: No such file or directory"
        if size != self.payload_size:
            return (f"entries describe {self.payload_size} payload bytes but "
                    f"{self.pages_name} holds {size}")
        return None


def entry_problems(e: Entry) -> list[str]:
    """Invariant violations of one entry (FORMAT.md section 3), as texts."""
    out: list[str] = []
    if e.flags & ~KNOWN_FLAGS:
        out.append(f"unknown flag bits {e.flags & ~KNOWN_FLAGS:#x}")
    if e.flags & PE_PRESENT and e.flags & PE_PARENT:
        out.append("PE_PRESENT and PE_PARENT together")
    if e.nr_pages == 0:
        out.append("nr_pages is 0")
    if e.vaddr % PAGE_SIZE:
        out.append(f"vaddr {e.vaddr:#x} is not page aligned")
    if not e.present:
        if e.compressed:
            out.append("compression metadata on an entry without PE_PRESENT")
        if e.flags & PE_PAYLOAD_ALIGNED:
            out.append("PE_PAYLOAD_ALIGNED on an entry without PE_PRESENT")
        return out
    if e.sizes is None:
        return out
    msg = e.msg
    if msg.region_pages * PAGE_SIZE > MAX_REGION_BYTES:
        out.append(f"region_pages {msg.region_pages} is over {MAX_REGION_BYTES >> 20} MiB")
        return out
    want = e.nblocks
    if len(e.sizes) != want:
        out.append(f"{len(e.sizes)} compressed_size values for {want} blocks "
                   f"({e.nr_pages} pages, {e.block_pages} per block)")
        return out
    sizes = e.sizes
    # every block but the last is full: one max() clears the common case quickly
    if sizes and (max(sizes) > e.block_pages * PAGE_SIZE or
                  sizes[-1] > e.block_bytes(len(sizes) - 1)):
        for i, size in enumerate(sizes):
            if size > e.block_bytes(i):
                out.append(f"block {i}: compressed_size {size} is larger than the block "
                           f"({e.block_bytes(i)} bytes)")
    if not msg.HasField("total_compressed_size"):
        out.append("compressed_size without total_compressed_size")
    elif e.total != sum(e.sizes):
        out.append(f"total_compressed_size {e.total} != sum of compressed_size "
                   f"{sum(e.sizes)}")
    return out


def layout(entries: list[Entry]) -> int:
    """Assign payload offset/length to present entries; returns the payload size."""
    pos = 0
    for e in entries:
        if not e.present:
            e.offset, e.length = None, 0
            continue
        if e.flags & PE_PAYLOAD_ALIGNED:
            pos = round_up(pos)
        e.offset = pos
        e.length = (e.total or 0) if e.compressed else e.nr_pages * PAGE_SIZE
        pos += e.length
    return pos
