"""Block compression: zero / raw / LZ4 decisions for one page or one region at a time.

A block's stored size says how to read it back: 0 = all zero (nothing stored), the block's
byte size = stored raw, anything else = a raw LZ4 block (no frame, no size prefix).
"""

import re
from dataclasses import dataclass

import lz4.block

from ..errors import ImageError
from ..images.blocks import decode_block, zeros
from ..images.pagemap import MAX_REGION_BYTES, PAGE_SIZE

DEFAULT_REGION_BYTES = 256 << 10
ACCELERATION_MIN, ACCELERATION_MAX = 1, 65537
MODES = {"off": 0, "page": 1, "region": 2}  # value = inventory `compress` field

__all__ = [
    "DEFAULT_REGION_BYTES",
    "MODES",
    "CompressionSpec",
    "decode_block",
    "encode_block",
    "encode_chunk",
    "parse_size",
    "raw_limit",
]


def parse_size(text):
    """'64K', '256k', '4M', '4096' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ImageError(f"bad size {text!r}: use bytes or a number with K or M (e.g. 256K)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20}[m.group(2).lower()]
    return int(m.group(1)) * mult


@dataclass(frozen=True)
class CompressionSpec:
    """How to store pages: mode "off", "page" (one block per page) or "region"."""

    mode: str = "page"
    region_size: int = DEFAULT_REGION_BYTES
    acceleration: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ImageError(f"unknown compression mode {self.mode!r} (off, page or region)")
        if not ACCELERATION_MIN <= self.acceleration <= ACCELERATION_MAX:
            raise ImageError(f"acceleration {self.acceleration} is outside "
                             f"{ACCELERATION_MIN}..{ACCELERATION_MAX}")
        rs = self.region_size
        if rs <= 0 or rs % PAGE_SIZE or rs > MAX_REGION_BYTES:
            raise ImageError(f"region size {rs} must be a multiple of {PAGE_SIZE} up to "
                             f"{MAX_REGION_BYTES >> 20} MiB")

    @property
    def block_pages(self):
        return self.region_size // PAGE_SIZE if self.mode == "region" else 1

    @property
    def inventory_mode(self):
        return MODES[self.mode]


def raw_limit(nbytes):
    """LZ4 output of at least this many bytes is not worth it: store raw (7/8 rule)."""
    return -(-nbytes * 7 // 8)


def encode_block(data, acceleration=1):
    """(stored size, stored bytes) for one block given as bytes."""
    n = len(data)
    if data == zeros(n):
        return 0, b""
    try:
        out = lz4.block.compress(data, mode="fast", acceleration=acceleration,
                                 store_size=False)
    except (lz4.block.LZ4BlockError, MemoryError, OverflowError):
        return n, bytes(data)
    if len(out) >= raw_limit(n) or not out:
        return n, bytes(data)
    return len(out), out


def encode_chunk(data, block_bytes, acceleration=1):
    """Encode consecutive blocks of `data` (bytes; the last block may be shorter).

    Returns (sizes, payload). This is the hot loop: one page per iteration in per-page mode,
    so it avoids attribute lookups and compares each page to a cached zero page with ==.
    Slices of a bytes object are bytes: the copy is cheaper than memoryview equality.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    sizes, parts = [], []
    add_size, add_part = sizes.append, parts.append
    compress = lz4.block.compress
    n = len(data)
    zero_full, limit_full = zeros(block_bytes), raw_limit(block_bytes)
    for off in range(0, n, block_bytes):
        block = data[off:off + block_bytes]
        if len(block) == block_bytes:
            zero, limit = zero_full, limit_full
        else:
            zero, limit = zeros(len(block)), raw_limit(len(block))
        if block == zero:
            add_size(0)
            continue
        try:
            out = compress(block, mode="fast", acceleration=acceleration, store_size=False)
        except (lz4.block.LZ4BlockError, MemoryError, OverflowError):
            out = None
        if out is None or len(out) >= limit or not out:
            add_size(len(block))
            add_part(block)
        else:
            add_size(len(out))
            add_part(out)
    return sizes, b"".join(parts)


def decode_chunk(buf, sizes, block_bytes, total_bytes, first_block=0):
    """Inverse of encode_chunk: decoded bytes of consecutive blocks stored back to back.

    total_bytes is the decoded length (the last block may be shorter than block_bytes).
    Raises ImageError naming the block index (counted from first_block).
    """
    parts = []
    pos = 0
    mv = memoryview(buf)
    left = total_bytes
    for i, size in enumerate(sizes):
        nbytes = min(block_bytes, left)
        try:
            parts.append(decode_block(mv[pos:pos + size], size, nbytes))
        except ImageError as exc:
            raise ImageError(f"block {first_block + i}: {exc}") from None
        pos += size
        left -= nbytes
    return b"".join(parts)
