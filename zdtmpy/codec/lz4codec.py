"""LZ4 behind the BlockAlgorithm interface: python-lz4 for single blocks, and for whole
chunks the fastest native path this machine has (lz4batch.c, else the ctypes loop)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from . import lz4batch, lz4block, lz4native
from .algorithm import Buffer, EncodedParts, Piece


class LZ4:
    name = "lz4"

    def compress(self, block: Buffer, acceleration: int) -> bytes | None:
        return lz4block.compress(block, acceleration)

    def decompress(self, stored: Buffer, nbytes: int) -> bytes:
        return lz4block.decompress(stored, nbytes)

    def bound(self, nbytes: int) -> int:
        return lz4block.bound(nbytes)

    def all_zero(self, buf: bytearray, n: int) -> bool | None:
        """The native zero test (lz4batch.c), or None where it is not built."""
        nat = lz4native.helper()
        if nat is None or nat.batch_all_zero is None:
            return None
        return lz4batch.all_zero(nat, buf, n)

    def encode_into(self, src: bytearray, n: int, out: bytearray, block_bytes: int,
                    acceleration: int) -> EncodedParts | None:
        nat = lz4native.helper()
        if nat is None:
            return None
        if nat.batch is not None:
            return lz4batch.encode(nat, src, n, out, block_bytes, acceleration)
        return lz4native.encode_loop(nat, src, n, out, block_bytes, acceleration)

    def encode_packed(self, src: bytearray, n: int, out: bytearray, block_bytes: int,
                      acceleration: int) -> tuple[array[int], int] | None:
        """The whole payload in out (lz4batch.c), or None where it is not built."""
        nat = lz4native.helper()
        if nat is None or nat.batch_packed is None:
            return None
        return lz4batch.encode_packed(nat, src, n, out, block_bytes, acceleration)

    def decode_into(self, src: Buffer, stored_len: int, sizes: Sequence[int],
                    block_bytes: int, total_bytes: int, out: bytearray,
                    out_offset: int, fill: bool = True) -> list[Piece] | None:
        nat = lz4native.helper()
        if nat is None:
            return None
        if nat.batch_decode is not None:
            return lz4batch.decode(nat, src, stored_len, sizes, block_bytes, total_bytes,
                                   out, out_offset, fill=fill)
        return lz4native.decode_loop(nat, src, stored_len, sizes, block_bytes, total_bytes,
                                     out, out_offset)

    def decode_whole_into(self, src: Buffer, stored_len: int, sizes: Sequence[int],
                          block_bytes: int, total_bytes: int, out: Buffer, out_offset: int,
                          zero_fill: bool = True) -> bool | None:
        nat = lz4native.helper()
        if nat is None or nat.batch_decode is None:
            return None
        return lz4batch.decode_whole(nat, src, stored_len, sizes, block_bytes, total_bytes,
                                     out, out_offset, zero_fill)
