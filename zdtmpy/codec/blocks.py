"""The block layout's rules, apart from the algorithm that encodes a block.

A block's stored size says how to read it back: 0 = all zero (nothing stored), the block's
byte size = stored raw, anything else = the algorithm's encoding of it (for LZ4: a raw LZ4
block, no frame, no size prefix). An encoding of at least 7/8 of the block is not worth it:
the block is stored raw.

`BlockCodec` applies these rules over chunks of consecutive blocks with one algorithm (see
`algorithm.BlockAlgorithm`), using the algorithm's whole-chunk fast paths where it has them.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

from ..errors import ImageError
from .algorithm import BlockAlgorithm, Buffer, EncodedParts, Piece

_ZEROS: dict[int, bytes] = {}

Encoded = EncodedParts


def zeros(n: int) -> bytes:
    """A cached all-zero bytes object of length n (compared against with ==, i.e. memcmp)."""
    z = _ZEROS.get(n)
    if z is None:
        if len(_ZEROS) > 64:
            _ZEROS.clear()
        z = _ZEROS[n] = bytes(n)
    return z


def raw_limit(nbytes: int) -> int:
    """An encoding of at least this many bytes is not worth it: store raw (7/8 rule)."""
    return -(-nbytes * 7 // 8)


def _bytes_view(data: Buffer) -> memoryview:
    if isinstance(data, memoryview) and data.format == "B" and data.ndim == 1:
        return data
    return memoryview(data).cast("B")


class BlockCodec:
    """The layout's rules with one algorithm: encode and decode chunks of blocks."""

    def __init__(self, algorithm: BlockAlgorithm) -> None:
        self.algorithm = algorithm
        self.name = algorithm.name

    # -- encoding -------------------------------------------------------------------------

    def encode_block(self, data: Buffer, acceleration: int = 1) -> tuple[int, bytes]:
        """(stored size, stored bytes) for one block."""
        n = len(data)
        if zeros(n).startswith(data):  # equal lengths: an equality test without a copy
            return 0, b""
        out = self.algorithm.compress(data, acceleration)
        if out is None or not out or len(out) >= raw_limit(n):
            return n, bytes(data)
        return len(out), out

    def encode_parts(self, data: Buffer, block_bytes: int, acceleration: int = 1) -> Encoded:
        """Encode consecutive blocks of `data` (the last block may be shorter) without
        copying it: (sizes, parts), parts being the stored pieces in order, encodings as
        bytes and raw blocks as memoryviews into `data` (which must not change until the
        parts are written). Zero blocks are found with zeros.startswith(block), a memcmp
        without a copy; an all-zero input with one comparison."""
        mv = _bytes_view(data)
        n = len(mv)
        if zeros(n).startswith(mv):
            return [0] * -(-n // block_bytes), []
        sizes: list[int] = []
        parts: list[bytes | memoryview] = []
        add_size, add_part = sizes.append, parts.append
        compress = self.algorithm.compress
        zero_full = zeros(block_bytes).startswith
        limit_full = raw_limit(block_bytes)
        for off in range(0, n, block_bytes):
            block = mv[off:off + block_bytes]
            size = len(block)
            if size == block_bytes:
                if zero_full(block):
                    add_size(0)
                    continue
                limit = limit_full
            else:
                if zeros(size).startswith(block):
                    add_size(0)
                    continue
                limit = raw_limit(size)
            out = compress(block, acceleration)
            if out is None or len(out) >= limit or not out:
                add_size(size)
                add_part(block)
            else:
                add_size(len(out))
                add_part(out)
        return sizes, parts

    def encode_chunk(self, data: Buffer, block_bytes: int,
                     acceleration: int = 1) -> tuple[list[int], bytes]:
        """Encode consecutive blocks of `data`: (sizes, payload bytes). See encode_parts."""
        sizes, parts = self.encode_parts(data, block_bytes, acceleration)
        return sizes, b"".join(parts)

    def all_zero(self, buf: bytearray, n: int) -> bool:
        """The first n bytes of buf are all zero: the algorithm's native test where it has
        one (a C scan without the GIL), else a memcmp against zeros."""
        if n > len(buf):
            raise ValueError(f"all_zero: {n} bytes asked, the buffer holds {len(buf)}")
        native = getattr(self.algorithm, "all_zero", None)
        got = native(buf, n) if native is not None else None
        if got is not None:
            return bool(got)
        return zeros(n).startswith(memoryview(buf)[:n])

    def encode_into(self, src: bytearray, n: int, out: bytearray, block_bytes: int,
                    acceleration: int = 1) -> Encoded:
        """encode_parts for the first n bytes of `src`, encodings going into `out` (at least
        n + bound(block_bytes) bytes) where the algorithm can: parts are memoryviews into
        src (raw) and out."""
        smv = memoryview(src)[:n]
        if len(smv) != n:
            raise ValueError(f"encode_into: {n} bytes asked, the buffer holds {len(src)}")
        # zero blocks are the algorithm's fast path's to find: in C, without the GIL (a
        # whole-chunk memcmp here would hold it, and the workers would take turns)
        got = self.algorithm.encode_into(src, n, out, block_bytes, acceleration)
        if got is not None:
            return got
        return self.encode_parts(smv, block_bytes, acceleration)

    def encode_packed(self, src: bytearray, n: int, out: bytearray, block_bytes: int,
                      acceleration: int = 1) -> tuple[array[int], int] | None:
        """encode_into for the first n bytes of `src` with every stored byte, raw blocks
        included, back to back in `out` (at least n bytes): (sizes as C uint32s, payload
        length; the payload is out[:length]), or None when the algorithm has no such path
        here (encode_into then). One native call, no Python work per block."""
        native = getattr(self.algorithm, "encode_packed", None)
        got: tuple[array[int], int] | None = \
            native(src, n, out, block_bytes, acceleration) if native is not None else None
        return got

    # -- decoding -------------------------------------------------------------------------

    def decode_block(self, stored: Buffer, size: int, nbytes: int) -> bytes:
        """Decoded bytes of one block (`stored` is exactly `size` bytes). Raises ImageError
        without a location (callers add it)."""
        if size == 0:
            return zeros(nbytes)
        if size == nbytes:
            return bytes(stored)
        if size > nbytes:
            raise ImageError(f"compressed_size {size} is larger than the block "
                             f"({nbytes} bytes)")
        return self.algorithm.decompress(stored, nbytes)

    def decode_parts(self, buf: Buffer, sizes: Sequence[int], block_bytes: int,
                     total_bytes: int, first_block: int = 0) -> list[Piece]:
        """Decode consecutive blocks stored back to back in `buf` without joining them.

        Returns the pieces in order: an int n for a run of n zero bytes (consecutive zero
        blocks merged), else a bytes-like object (decoded bytes, or a memoryview into buf
        for a raw block). total_bytes is the decoded length (the last block may be
        shorter). Raises ImageError naming the block index (counted from first_block).
        """
        out: list[Piece] = []
        add = out.append
        pos = 0
        mv = memoryview(buf)
        left = total_bytes
        for i, size in enumerate(sizes):
            nbytes = min(block_bytes, left)
            left -= nbytes
            if size == 0:
                last = out[-1] if out else None
                if type(last) is int:
                    out[-1] = last + nbytes
                else:
                    add(nbytes)
                continue
            stored = mv[pos:pos + size]
            pos += size
            if size == nbytes:
                if len(stored) != size:
                    raise ImageError(f"block {first_block + i}: stored block is short "
                                     f"({len(stored)} of {size} bytes)")
                add(stored)
                continue
            try:  # encoded (or an oversized size): the shared checks, located here
                add(self.decode_block(stored, size, nbytes))
            except ImageError as exc:
                raise ImageError(f"block {first_block + i}: {exc}") from None
        return out

    def decode_chunk(self, buf: Buffer, sizes: Sequence[int], block_bytes: int,
                     total_bytes: int, first_block: int = 0) -> bytes:
        """Inverse of encode_chunk: the decoded bytes of consecutive blocks."""
        if len(sizes) > 1:
            src: Buffer = buf
            if type(src) is not bytes and type(src) is not bytearray:
                src = memoryview(src).cast("B")
                if src.readonly:
                    src = bytes(src)
            out = bytearray(min(total_bytes, len(sizes) * block_bytes))
            if self.algorithm.decode_into(src, len(src), sizes, block_bytes, total_bytes,
                                          out, 0) is not None:
                return bytes(out)
        parts = self.decode_parts(buf, sizes, block_bytes, total_bytes, first_block)
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        return b"".join(zeros(p) if isinstance(p, int) else p for p in parts)

    def decode_into(self, src: Buffer, stored_len: int, sizes: Sequence[int],
                    block_bytes: int, total_bytes: int, out: bytearray,
                    first_block: int = 0) -> list[Piece]:
        """decode_parts for stored bytes at the start of `src`, encoded blocks decoded into
        `out` (at least total_bytes long) where the algorithm can. Pieces are ints (zero
        runs) or memoryviews into src (raw) and out."""
        smv = memoryview(src)[:stored_len]
        if len(smv) != stored_len or len(out) < total_bytes:
            raise ValueError("decode_into: buffers smaller than the sizes given")
        if stored_len == 0 and not any(sizes):   # all zero blocks: nothing to decode
            end = min(total_bytes, len(sizes) * block_bytes)
            return [end] if end > 0 else []
        got = self.algorithm.decode_into(src, stored_len, sizes, block_bytes, total_bytes,
                                         out, 0, fill=False)   # raw blocks: views into src
        if got is not None:
            return got
        return self.decode_parts(smv, sizes, block_bytes, total_bytes, first_block)  # says why

    def decode_span_into(self, buf: Buffer, sizes: Sequence[int], block_bytes: int,
                         total_bytes: int, out: bytearray, out_offset: int = 0) -> bool:
        """Decode consecutive blocks straight into `out` from out_offset on, skipping zero
        blocks (out must hold zeros there already). False, having written nothing that
        matters, when the algorithm has no fast path or a block is bad: the caller then
        decodes block by block (which says why)."""
        if len(sizes) == 0:
            return False
        return self.algorithm.decode_into(buf, len(buf), sizes, block_bytes, total_bytes,
                                          out, out_offset) is not None

    def decode_whole_into(self, buf: Buffer, sizes: Sequence[int], block_bytes: int,
                          total_bytes: int, out: Buffer, out_offset: int = 0,
                          zero_fill: bool = True) -> bool:
        """All total_bytes of consecutive blocks into `out` from out_offset on, in one go
        where the algorithm can (zero blocks zero-filled when zero_fill, else left alone:
        out holds zeros there already). False, out's range then undefined, when there is
        no fast path or a block is bad: the caller decodes block by block (which says why)."""
        if len(sizes) == 0:
            return False
        return bool(self.algorithm.decode_whole_into(buf, len(buf), sizes, block_bytes,
                                                     total_bytes, out, out_offset, zero_fill))

    def decode_span(self, buf: Buffer, sizes: Sequence[int], first_block: int,
                    block_bytes: Callable[[int], int],
                    where: Callable[[int], str]) -> list[bytes]:
        """Decode consecutive blocks stored back to back in buf; a list of bytes.
        block_bytes(i) gives block i's decoded size (i counted from the entry start,
        first_block being the first one in buf); where(i) names block i for errors."""
        out = []
        pos = 0
        mv = memoryview(buf)
        for k, size in enumerate(sizes):
            i = first_block + k
            try:
                out.append(self.decode_block(mv[pos:pos + size], size, block_bytes(i)))
            except ImageError as exc:
                raise ImageError(f"{where(i)}: {exc}") from None
            pos += size
        return out
