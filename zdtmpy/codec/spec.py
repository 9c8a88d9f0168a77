"""The one compression value: how a layer stores its pages, from the command line to the
inventory. Its parts are named apart from the other "modes" of the project:

* `layout`: how pages are cut into blocks: "off" (plain pages), "page" (one block per page)
  or "region" (one block per `region_size` bytes of an entry);
* `algorithm`: what encodes a block ("lz4", the only one CRIU's format defines);
* `acceleration`: the algorithm's speed knob.

A test *mode* (plain, chain, page-server, ...) is `matrix.Mode`, something else entirely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from ..errors import ImageError

PAGE_SIZE = 4096
MAX_REGION_BYTES = 4 << 20          # FORMAT.md: a region block is at most 4 MiB
DEFAULT_REGION_BYTES = 256 << 10    # the one default region size
ACCELERATION_MIN, ACCELERATION_MAX = 1, 65537

Layout = Literal["off", "page", "region"]
LAYOUTS: tuple[Layout, ...] = ("off", "page", "region")
# The inventory's `compress` field (and the stream header's layout byte) for each layout.
LAYOUT_IDS: dict[Layout, int] = {"off": 0, "page": 1, "region": 2}
LAYOUT_BY_ID: dict[int, Layout] = {v: k for k, v in LAYOUT_IDS.items()}
ALGORITHMS = ("lz4",)

_SIZE = re.compile(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str | int) -> int:
    """'64K', '256k', '4M', '1G', '4096', '64KiB' -> bytes (the one size grammar)."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise ImageError(f"bad size {text!r}: use bytes or a number with K, M or G "
                         "(e.g. 256K)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def size_label(nbytes: int) -> str:
    """262144 -> '256k', 4194304 -> '4m', 5000 -> '5000' (a region setting's suffix)."""
    if nbytes and nbytes % (1 << 20) == 0:
        return f"{nbytes >> 20}m"
    return f"{nbytes >> 10}k" if nbytes % (1 << 10) == 0 else str(nbytes)


class InventoryFields(Protocol):
    """The inventory message fields a compression value reads and writes."""

    img_version: int
    compress: int
    compress_region_size: int

    def ClearField(self, name: str) -> None: ...  # noqa: N802 - protobuf's name


@dataclass(frozen=True)
class Compression:
    """How to store pages; validated on creation (a bad value never travels)."""

    layout: Layout = "page"
    region_size: int = DEFAULT_REGION_BYTES
    acceleration: int = 1
    algorithm: str = "lz4"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ImageError(f"unknown compression layout {self.layout!r} "
                             "(off, page or region)")
        if self.algorithm not in ALGORITHMS:
            raise ImageError(f"unknown compression algorithm {self.algorithm!r} "
                             f"({', '.join(ALGORITHMS)})")
        if not ACCELERATION_MIN <= self.acceleration <= ACCELERATION_MAX:
            raise ImageError(f"acceleration {self.acceleration} is outside "
                             f"{ACCELERATION_MIN}..{ACCELERATION_MAX}")
        rs = self.region_size
        if rs <= 0 or rs % PAGE_SIZE or rs > MAX_REGION_BYTES:
            raise ImageError(f"region size {rs} must be a multiple of {PAGE_SIZE} up to "
                             f"{MAX_REGION_BYTES >> 20} MiB")

    @property
    def enabled(self) -> bool:
        return self.layout != "off"

    @property
    def is_region(self) -> bool:
        return self.layout == "region"

    @property
    def block_pages(self) -> int:
        """Pages per block: region_size / PAGE_SIZE in region layout, else 1."""
        return self.region_size // PAGE_SIZE if self.layout == "region" else 1

    @property
    def block_bytes(self) -> int:
        return self.block_pages * PAGE_SIZE

    @property
    def layout_id(self) -> int:
        """The inventory `compress` field (and stream header byte) for this layout."""
        return LAYOUT_IDS[self.layout]

    @property
    def name(self) -> str:
        """The setting's name in item ids and options: off, page, region64k, ..."""
        if self.layout == "region":
            return f"region{size_label(self.region_size)}"
        return self.layout

    def describe(self) -> str:
        """For messages: plain, per-page, region 64 KiB."""
        return {"off": "plain", "page": "per-page"}.get(
            self.layout, f"region {self.region_size >> 10} KiB")

    def with_acceleration(self, acceleration: int) -> Compression:
        return replace(self, acceleration=acceleration)

    def stamp(self, inv: InventoryFields) -> None:
        """Mark an inventory entry as describing a layer compressed this way (FORMAT.md 4:
        version 3, field 15, and field 16 only in region layout)."""
        inv.img_version = 3
        inv.compress = self.layout_id
        if self.layout == "region":
            inv.compress_region_size = self.region_size
        else:
            inv.ClearField("compress_region_size")

    @classmethod
    def from_ids(cls, layout_id: int, region_size: int = 0) -> Compression:
        """The value an inventory (or a stream header) describes."""
        layout = LAYOUT_BY_ID.get(layout_id)
        if layout is None:
            raise ImageError(f"unknown compression layout id {layout_id}")
        return cls(layout, region_size or DEFAULT_REGION_BYTES)


OFF = Compression("off")


def parse_setting(text: str, acceleration: int = 1) -> Compression:
    """A setting's name -> Compression: 'off' ('none', 'no'), 'page' ('per-page', 'lz4'),
    'region' (256K), 'region64k', 'region-4m', ..."""
    key = text.strip().lower()
    if key in ("off", "none", "no"):
        return Compression("off", acceleration=acceleration)
    if key in ("page", "per-page", "lz4"):
        return Compression("page", acceleration=acceleration)
    if key.startswith("region"):
        rest = key[len("region"):].lstrip("-")
        size = parse_size(rest) if rest else DEFAULT_REGION_BYTES
        return Compression("region", size, acceleration)
    raise ImageError(f"unknown compression {text!r} "
                     "(expected off, page, or region[SIZE], e.g. region64k)")


def layout_of(text: str) -> Layout:
    """A layout name checked (for options that take one)."""
    if text not in LAYOUTS:
        raise ImageError(f"unknown compression layout {text!r} (off, page or region)")
    return text  # narrowed to a Layout by the check above
