"""Decoding of stored blocks (zero / raw / LZ4), shared by the reader, convert and verify."""

import lz4.block

from ..errors import ImageError

_ZEROS = {}


def zeros(n):
    """A cached all-zero bytes object of length n (compared against with ==, i.e. memcmp)."""
    z = _ZEROS.get(n)
    if z is None:
        if len(_ZEROS) > 64:
            _ZEROS.clear()
        z = _ZEROS[n] = bytes(n)
    return z


def decode_block(stored, size, nbytes):
    """Decoded bytes of one block: size 0 = zeros, size == nbytes = raw, else an LZ4 block.

    `stored` is exactly `size` bytes. Raises ImageError (without location; callers add it).
    """
    if size == 0:
        return zeros(nbytes)
    if size == nbytes:
        return bytes(stored)
    if size > nbytes:
        raise ImageError(f"compressed_size {size} is larger than the block ({nbytes} bytes)")
    try:
        out = lz4.block.decompress(stored, uncompressed_size=nbytes)
    except lz4.block.LZ4BlockError:
        raise ImageError(f"LZ4 block of {size} bytes is corrupt (does not decode to "
                         f"{nbytes} bytes)") from None
    if len(out) != nbytes:
        raise ImageError(f"LZ4 block of {size} bytes decodes to {len(out)} bytes, "
                         f"expected {nbytes}")
    return out


def decode_span(buf, sizes, first_block, block_bytes, where):
    """Decode consecutive blocks stored back to back in buf; returns a list of bytes.

    sizes: the compressed sizes of those blocks; block_bytes(i) gives block i's decoded size
    (i counted from the entry start, first_block being the first one in buf).
    where(i) names block i for error messages.
    """
    out = []
    pos = 0
    mv = memoryview(buf)
    for k, size in enumerate(sizes):
        i = first_block + k
        try:
            out.append(decode_block(mv[pos:pos + size], size, block_bytes(i)))
        except ImageError as exc:
            raise ImageError(f"{where(i)}: {exc}") from None
        pos += size
    return out
