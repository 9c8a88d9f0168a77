"""capture's chunk encoder: criu's pipe read into reused chunk buffers, each chunk coded in
one call; the records are the very bytes the per-block coder writes."""

import random

import pytest

from zdtmpy.codec.coding import LZ4_CODEC

PS = 4096


def mixed(n_pages, seed):
    rnd = random.Random(seed)
    kinds = [lambda i: (b"text %d " % i * 600)[:PS], lambda i: rnd.randbytes(PS),
             lambda i: bytes(PS), lambda i: rnd.randbytes(PS // 2) + bytes(PS // 2)]
    return b"".join(kinds[i % 4](i) for i in range(n_pages))


@pytest.mark.parametrize("block", [PS, 64 << 10])
def test_capture_encodes_a_chunk_as_the_per_block_reference_does(block):
    """capture's one-call chunk encoder writes the very record the per-block coder would."""
    from zdtmpy.transport.capture import _encode_record
    from zdtmpy.transport.streamformat import blocks_record

    data = mixed(256, 3)[:(1 << 20) - 5 * PS] + bytes(5 * PS)
    sizes, payload = LZ4_CODEC.encode_chunk(data, block)
    want = blocks_record(7, 1 << 20, block, len(data), sizes, payload)
    buf = bytearray(data) + b"\xee" * 100   # bytes past n are not the chunk's
    got = _encode_record(7, 1 << 20, buf, len(data), block, 1)
    assert [bytes(p) for p in got] == [bytes(p) for p in want]
