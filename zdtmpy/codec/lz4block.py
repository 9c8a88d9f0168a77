"""LZ4 through python-lz4's block functions: the reference path, always available."""

from __future__ import annotations

from collections.abc import Sequence

import lz4.block

from ..errors import ImageError
from .algorithm import Buffer, EncodedParts, Piece


def compress(block: Buffer, acceleration: int) -> bytes | None:
    """A raw LZ4 block (no size prefix), or None when LZ4 cannot take it."""
    try:
        out: bytes = lz4.block.compress(block, mode="fast", acceleration=acceleration,
                                        store_size=False)
        return out
    except (lz4.block.LZ4BlockError, MemoryError, OverflowError):
        return None


def decompress(stored: Buffer, nbytes: int) -> bytes:
    size = len(stored)
    try:
        out: bytes = lz4.block.decompress(stored, uncompressed_size=nbytes)
    except lz4.block.LZ4BlockError:
        raise ImageError(f"LZ4 block of {size} bytes is corrupt (does not decode to "
                         f"{nbytes} bytes)") from None
    if len(out) != nbytes:
        raise ImageError(f"LZ4 block of {size} bytes decodes to {len(out)} bytes, "
                         f"expected {nbytes}")
    return out


def bound(nbytes: int) -> int:
    """LZ4_compressBound."""
    return nbytes + nbytes // 255 + 16


class PythonLZ4:
    """LZ4 with python-lz4 only (no fast paths): the reference the native paths are
    checked against."""

    name = "lz4"

    def compress(self, block: Buffer, acceleration: int) -> bytes | None:
        return compress(block, acceleration)

    def decompress(self, stored: Buffer, nbytes: int) -> bytes:
        return decompress(stored, nbytes)

    def bound(self, nbytes: int) -> int:
        return bound(nbytes)

    def encode_into(self, src: bytearray, n: int, out: bytearray, block_bytes: int,
                    acceleration: int) -> EncodedParts | None:
        return None

    def decode_into(self, src: Buffer, stored_len: int, sizes: Sequence[int],
                    block_bytes: int, total_bytes: int, out: bytearray,
                    out_offset: int, fill: bool = True) -> list[Piece] | None:
        return None

    def decode_whole_into(self, src: Buffer, stored_len: int, sizes: Sequence[int],
                          block_bytes: int, total_bytes: int, out: Buffer, out_offset: int,
                          zero_fill: bool = True) -> bool | None:
        return None
