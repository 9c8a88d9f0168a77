"""The small interface one compression algorithm implements (LZ4 today; a zstd would be a
second implementation). The block layout's rules (zero / raw / encoded, the 7/8 rule, block
sizes) live in `blocks.BlockCodec`, not here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Union

Buffer = Union[bytes, bytearray, memoryview]
# A decoded piece: an int n is a run of n zero bytes, anything else the bytes themselves.
Piece = Union[int, bytes, bytearray, memoryview]
EncodedParts = tuple[list[int], list[Union[bytes, memoryview]]]


class BlockAlgorithm(Protocol):
    name: str

    def compress(self, block: Buffer, acceleration: int) -> bytes | None:
        """The encoding of one block, or None when it cannot be encoded (stored raw)."""

    def decompress(self, stored: Buffer, nbytes: int) -> bytes:
        """One encoded block back to its nbytes; ImageError (no location) when corrupt."""

    def bound(self, nbytes: int) -> int:
        """The most bytes an encoding of nbytes may take (output buffers are sized by it)."""

    def encode_into(self, src: bytearray, n: int, out: bytearray, block_bytes: int,
                    acceleration: int) -> EncodedParts | None:
        """Whole-chunk fast path of BlockCodec.encode_parts for src[:n] (all-zero blocks
        included: size 0), encodings written into `out`; None when the algorithm has none
        here."""

    def decode_into(self, src: Buffer, stored_len: int, sizes: Sequence[int],
                    block_bytes: int, total_bytes: int, out: bytearray,
                    out_offset: int, fill: bool = True) -> list[Piece] | None:
        """Whole-chunk fast path: every non-zero block decoded (or copied) to its place in
        `out` from out_offset on, zero blocks skipped; with fill=False raw blocks may stay
        in src instead (the caller wants the pieces only). Returns the pieces (ints for
        zero runs, memoryviews into out or src, adjacent data merged), or None when there
        is no fast path here or a block is bad (the caller decodes again block by block to
        say why)."""

    def decode_whole_into(self, src: Buffer, stored_len: int, sizes: Sequence[int],
                          block_bytes: int, total_bytes: int, out: Buffer, out_offset: int,
                          zero_fill: bool = True) -> bool | None:
        """Whole-record fast path for a reader that wants the bytes only: all of
        out[out_offset:out_offset + total_bytes] written (zero blocks zero-filled when
        zero_fill, else left alone), no pieces. True when done, False when a block is bad
        or the blocks do not cover total_bytes, None when there is no fast path here."""
