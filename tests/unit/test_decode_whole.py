"""decode_whole_into: one call, all of a chunk's bytes (zero blocks filled or left alone), the
same bytes as the block-by-block reference; a bad or short chunk is refused."""

import random

import pytest

from zdtmpy.codec.blocks import BlockCodec
from zdtmpy.codec.coding import LZ4_CODEC
from zdtmpy.codec.lz4block import PythonLZ4
from zdtmpy.codec.lz4native import helper

PS = 4096
pytestmark = pytest.mark.skipif(helper() is None or helper().batch_decode is None,
                                reason="no native LZ4 batch helper here (no compiler?)")


def chunk(seed, pages):
    rnd = random.Random(seed)
    kinds = [lambda i: (b"line %d of text " % i * 300)[:PS], lambda i: rnd.randbytes(PS),
             lambda i: bytes(PS), lambda i: rnd.randbytes(PS // 2) + bytes(PS // 2)]
    return b"".join(kinds[(i * 7 + seed) % 4](i) for i in range(pages)) + b"tail" * 100


@pytest.mark.parametrize("block", [PS, 64 << 10, 256 << 10])
def test_the_whole_chunk_decodes_as_the_reference_does(block):
    data = chunk(block, 300)
    data = data[:len(data) // block * block] + bytes(2 * block) + data   # zero blocks too
    sizes, payload = LZ4_CODEC.encode_chunk(data, block)
    assert 0 in sizes and any(0 < s < block for s in sizes)
    ref = BlockCodec(PythonLZ4()).decode_chunk(payload, sizes, block, len(data))
    assert ref == data
    dirty = bytearray(b"\xaa" * (len(data) + 9))
    assert LZ4_CODEC.decode_whole_into(payload, sizes, block, len(data), dirty, 5)
    assert dirty[5:5 + len(data)] == data and dirty[:5] == b"\xaa" * 5   # zeros filled
    fresh = bytearray(len(data))
    assert LZ4_CODEC.decode_whole_into(payload, sizes, block, len(data), fresh, 0, False)
    assert fresh == data   # zero blocks left alone: the buffer held zeros already


def test_a_bad_or_short_chunk_is_refused():
    block = 64 << 10
    data = chunk(3, 100)
    sizes, payload = LZ4_CODEC.encode_chunk(data, block)
    i = next(k for k, s in enumerate(sizes) if 0 < s < block)
    at = sum(sizes[:i])
    bad = payload[:at] + b"\xff" * sizes[i] + payload[at + sizes[i]:]
    out = bytearray(len(data))
    assert not LZ4_CODEC.decode_whole_into(bad, sizes, block, len(data), out)
    assert not LZ4_CODEC.decode_whole_into(payload, sizes, block, len(data) + block, out + out)
    assert not LZ4_CODEC.decode_whole_into(payload, sizes[:-1], block, len(data), out)
    with pytest.raises(ValueError):
        LZ4_CODEC.decode_whole_into(payload, sizes, block, len(data), bytearray(10))
