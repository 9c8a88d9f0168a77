"""Block coding as the compression value asks: `codec_for(compression)`, plus the LZ4
codec's operations for readers of CRIU's format (whose encoded blocks are LZ4 by
definition). Adding an algorithm: implement `algorithm.BlockAlgorithm`, register it here,
name it in `spec.ALGORITHMS`."""

from __future__ import annotations

from .blocks import BlockCodec
from .lz4codec import LZ4
from .spec import Compression

_CODECS: dict[str, BlockCodec] = {"lz4": BlockCodec(LZ4())}
LZ4_CODEC = _CODECS["lz4"]


def codec_for(compression: Compression | None = None) -> BlockCodec:
    """The block codec of a compression value's algorithm (LZ4 for None)."""
    return _CODECS[compression.algorithm if compression is not None else "lz4"]


encode_block = LZ4_CODEC.encode_block
encode_parts = LZ4_CODEC.encode_parts
encode_chunk = LZ4_CODEC.encode_chunk
encode_into = LZ4_CODEC.encode_into
decode_block = LZ4_CODEC.decode_block
decode_parts = LZ4_CODEC.decode_parts
decode_chunk = LZ4_CODEC.decode_chunk
decode_into = LZ4_CODEC.decode_into
decode_span_into = LZ4_CODEC.decode_span_into
decode_span = LZ4_CODEC.decode_span
decode_whole_into = LZ4_CODEC.decode_whole_into
