"""Capture-side checks of what criu sent (docs/STREAM-FORMAT.md): criu's exit status is not
the streamer's to see, so a stream is only finished when its files can be whole."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator

from .streamproto import StreamerError

# Image files that are nothing but magic + framed entries: a cut inside an entry is caught.
FRAMED = re.compile(r"(core|mm|pagemap|ids|fs|fdinfo)-.*\.img|"
                    r"(pstree|inventory|files|seccomp)\.img")
PAGES = re.compile(r"pages-\d+\.img")
PAGEMAP = re.compile(r"pagemap-(?:shmem-)?\d+\.img")
_U32 = struct.Struct("<I")


class FramingCheck:
    """Follows the `u32 length + entry` framing of an image without keeping it, so a file
    cut inside an entry (criu gone mid-file) is an error and not a short image."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.skip = 4 if name == "inventory.img" else 8  # the magic(s)
        self.hdr = b""
        self.entries = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data)
        while mv:
            if self.skip:
                k = min(self.skip, len(mv))
                self.skip -= k
                mv = mv[k:]
                continue
            need = 4 - len(self.hdr)
            self.hdr += bytes(mv[:need])
            mv = mv[need:]
            if len(self.hdr) == 4:
                self.skip = _U32.unpack(self.hdr)[0]
                self.hdr = b""
                self.entries += 1

    def finish(self, size: int) -> None:
        if self.skip or self.hdr:
            what = (f"inside entry {self.entries - 1}, {self.skip} bytes short" if self.skip
                    else "inside an entry length")
            if self.entries == 0 and self.skip:
                what = "inside the image magic"
            raise StreamerError(f"{self.name}: criu closed the pipe {what} (got {size} bytes): "
                                "the image is truncated (criu disconnected mid-file?)")


def pagemap_summary(data: bytes, name: str) -> tuple[int, int]:
    """(pages_id, present pages) of a pagemap criu sent (checked against its pages file)."""
    from ..images import messages
    from ..images.framing import PAGEMAP_MAGIC, parse_image
    from ..images.pagemap import PE_PRESENT, entry_flags, entry_nr_pages

    raw = parse_image(data, name, PAGEMAP_MAGIC)
    if not raw.entries:
        raise StreamerError(f"{name}: no pagemap_head")
    head = messages.decode(messages.PagemapHead, raw.entries[0], f"{name}: head")
    present = 0
    for i, blob in enumerate(raw.entries[1:]):
        msg = messages.decode(messages.PagemapEntry, blob, f"{name}: entry {i}")
        if entry_flags(msg) & PE_PRESENT:
            present += entry_nr_pages(msg)
    return int(head.pages_id), present


def _unmatched(pagemaps: dict[str, tuple[int, int]],
               sizes: dict[str, int]) -> Iterator[tuple[str, str, str, int, int]]:
    """Pages files that do not match their pagemaps, as (kind, pagemap, pages file, bytes,
    present pages); kind: "missing" (named, not carried), "size" or "orphan" (named by no
    pagemap). pagemaps: name -> (pages_id, present pages); sizes: file name -> bytes."""
    named = set()
    for name, (pages_id, present) in sorted(pagemaps.items()):
        pages = f"pages-{pages_id}.img"
        named.add(pages)
        size = sizes.get(pages)
        if size is None and present:
            yield "missing", name, pages, 0, present
        elif size is not None and size != present * 4096:
            yield "size", name, pages, size, present
    for pages in sorted(sizes):
        if PAGES.fullmatch(pages) and pages not in named:
            yield "orphan", "", pages, sizes[pages], 0


def pages_mismatches(pagemaps: dict[str, tuple[int, int]],
                     sizes: dict[str, int]) -> list[str]:
    """Problems of a stream's pages files against its pagemaps (see `_unmatched`)."""
    problems = []
    for kind, name, pages, size, present in _unmatched(pagemaps, sizes):
        if kind == "missing":
            problems.append(f"{name} names {pages}, which the stream does not carry")
        elif kind == "size":
            problems.append(f"{pages}: {size} bytes in the stream, but {name} describes "
                            f"{present} pages ({present * 4096} bytes)")
        else:
            problems.append(f"{pages}: no pagemap in the stream names it")
    return problems


def check_complete(pagemaps: dict[str, tuple[int, int]], pages_sizes: dict[str, int],
                   names: Iterable[str]) -> None:
    """Refuse a dump that cannot be whole. pagemaps: name -> (pages_id, present pages);
    pages_sizes: pages file name -> bytes received; names: every file criu sent."""
    problems = []
    for kind, name, pages, got, present in _unmatched(pagemaps, pages_sizes):
        if kind == "missing":
            problems.append(f"{name} names {pages}, which criu never sent")
        elif kind == "size":
            how = "short of" if got < present * 4096 else "beyond"
            problems.append(f"{pages}: {got} bytes, {abs(got - present * 4096)} bytes "
                            f"{how} the {present} pages {name} describes (criu "
                            "disconnected mid-file?)")
        else:
            problems.append(f"{pages}: no pagemap names it")
    if "inventory.img" not in names:
        problems.append("criu sent no inventory.img (criu writes it last): the dump did "
                        "not complete")
    if problems:
        raise StreamerError("capture: " + "; ".join(problems))
