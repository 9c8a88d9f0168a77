"""Block codec: sentinels, the 7/8 rule, region decisions, spec validation."""

import random

import lz4.block
import pytest

from zdtmpy.codec import Compression, parse_size
from zdtmpy.codec.blocks import raw_limit
from zdtmpy.codec.coding import decode_block, decode_chunk, encode_block, encode_chunk
from zdtmpy.errors import ImageError

PS = 4096


def rand(n, seed=1):
    return random.Random(seed).randbytes(n)


def text_page(i=0):
    return (b"the quick brown fox %d jumps over the lazy dog\n" % i * 200)[:PS]


def lz4_len(data):
    return len(lz4.block.compress(data, store_size=False))


def page_with_lz4_size(target):
    """A page (random prefix + zeros) whose LZ4 output is exactly `target` bytes."""
    base = rand(PS, seed=7)
    for k in range(3000, PS):
        page = base[:k] + bytes(PS - k)
        if lz4_len(page) == target:
            return page
    pytest.fail(f"no page with LZ4 output of {target} bytes found")


def test_zero_page_is_size_0():
    assert encode_block(bytes(PS)) == (0, b"")
    assert decode_block(b"", 0, PS) == bytes(PS)


def test_random_page_is_raw():
    page = rand(PS)
    size, stored = encode_block(page)
    assert size == PS and stored == page
    assert decode_block(stored, PS, PS) == page


def test_text_page_is_lz4():
    page = text_page()
    size, stored = encode_block(page)
    assert 0 < size < raw_limit(PS)
    assert len(stored) == size
    assert decode_block(stored, size, PS) == page


def test_raw_limit_is_seven_eighths():
    assert raw_limit(PS) == 3584
    assert raw_limit(256 * 1024) == 229376


def test_threshold_edge_3583_is_lz4_and_3584_is_raw():
    below, at = page_with_lz4_size(3583), page_with_lz4_size(3584)
    assert encode_block(below)[0] == 3583
    assert encode_block(at) == (PS, at)
    sizes, payload = encode_chunk(below + at, PS)
    assert sizes == [3583, PS]
    assert decode_chunk(payload, sizes, PS, 2 * PS) == below + at


def test_chunk_per_page_sentinels_and_roundtrip():
    data = bytes(PS) + rand(PS) + text_page(1) + bytes(PS)
    sizes, payload = encode_chunk(data, PS)
    assert sizes[0] == 0 and sizes[1] == PS and 0 < sizes[2] < 3584 and sizes[3] == 0
    assert len(payload) == sum(sizes)
    assert decode_chunk(payload, sizes, PS, len(data)) == data


def test_region_with_one_nonzero_page_is_not_zero():
    region = bytes(PS * 15) + b"\1" + bytes(PS - 1)
    sizes, payload = encode_chunk(region, 16 * PS)
    assert len(sizes) == 1 and 0 < sizes[0] < 16 * PS
    assert decode_chunk(payload, sizes, 16 * PS, len(region)) == region


def test_all_zero_region_is_zero():
    sizes, payload = encode_chunk(bytes(32 * PS), 16 * PS)
    assert sizes == [0, 0] and payload == b""


def test_short_last_region():
    data = text_page() * 5 + rand(2 * PS)       # 7 pages, regions of 4: 4 + 3 pages
    sizes, payload = encode_chunk(data, 4 * PS)
    assert len(sizes) == 2
    assert 0 < sizes[0] < 4 * PS
    assert decode_chunk(payload, sizes, 4 * PS, len(data)) == data
    raw_tail = rand(3 * PS)
    sizes, payload = encode_chunk(text_page() * 4 + raw_tail, 4 * PS)
    assert sizes[1] == 3 * PS and payload.endswith(raw_tail)   # raw short block: its own size


def test_acceleration_changes_nothing_for_decoding():
    data = b"".join(text_page(i) for i in range(8))
    for acc in (1, 2, 100, 65537):
        sizes, payload = encode_chunk(data, PS, acc)
        assert decode_chunk(payload, sizes, PS, len(data)) == data


@pytest.mark.parametrize("kwargs", [{"layout": "zstd"}, {"algorithm": "zstd"},
                                    {"acceleration": 0},
                                    {"acceleration": 65538}, {"region_size": 1000},
                                    {"region_size": 8 << 20}, {"region_size": 0}])
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(ImageError):
        Compression(**kwargs)


def test_spec_block_pages():
    assert Compression("page").block_pages == 1
    assert Compression("region", 64 * 1024).block_pages == 16
    assert Compression("region", 4 << 20).block_pages == 1024


def test_parse_size():
    assert parse_size("64K") == 65536
    assert parse_size("256k") == 262144
    assert parse_size("4M") == 4 << 20
    assert parse_size("8192") == 8192
    with pytest.raises(ImageError):
        parse_size("lots")


@pytest.mark.parametrize("stored,size,what", [
    (b"\xff" * 100, 100, "corrupt"),           # garbage LZ4 bytes
    (rand(PS + 1), PS + 1, "larger"),          # a size larger than its block
])
def test_decode_errors(stored, size, what):
    with pytest.raises(ImageError, match=what):
        decode_block(stored, size, PS)


def test_lz4_block_decoding_to_wrong_length_is_an_error():
    short = lz4.block.compress(text_page()[:2048], store_size=False)
    with pytest.raises(ImageError):
        decode_block(short, len(short), PS)


def test_native_encoders_match_lz4_block():
    """encode_into (lz4batch.c when it could be built, and the per-block ctypes loop) gives
    the sizes and bytes of encode_parts, which uses lz4.block itself."""
    from zdtmpy.codec import coding, lz4batch, lz4native

    nat = lz4native.helper()
    if nat is None:
        pytest.skip("python-lz4's LZ4 library is not usable through ctypes here")
    data = b"".join([text_page(1), rand(PS, 2), bytes(PS), rand(PS // 2, 3) + bytes(PS // 2)]
                    * 40) + text_page(2)[:1234]
    for block in (PS, 8 * PS, 256 << 10):
        want_sizes, want_parts = coding.encode_parts(data, block)
        src = bytearray(data)
        results = [lz4native.encode_loop(nat, src, len(data),
                                      bytearray(2 * len(data)), block, 1)]
        if nat.batch is not None:
            results.append(lz4batch.encode(nat, bytearray(data), len(data),
                                               bytearray(2 * len(data)), block, 1))
        for sizes, parts in results:
            assert sizes == want_sizes
            assert b"".join(parts) == b"".join(want_parts)


def test_batch_encoder_is_built_where_a_compiler_exists():
    import shutil

    from zdtmpy.build import compiler_command
    from zdtmpy.codec import lz4native

    if lz4native.helper() is None or not shutil.which(compiler_command()[0]):
        pytest.skip("no native LZ4 path or no C compiler")
    assert lz4native.helper().batch is not None, lz4native.batch_problem()


def test_native_encoders_keep_the_seven_eighths_edge():
    """The native paths give LZ4 room for just under 7/8 of a block (it gives up early on
    incompressible data): output of limit - 1 bytes is still LZ4, of limit bytes raw, as
    with lz4.block and the full bound."""
    from zdtmpy.codec import coding, lz4batch, lz4native

    nat = lz4native.helper()
    if nat is None:
        pytest.skip("python-lz4's LZ4 library is not usable through ctypes here")
    below, at = page_with_lz4_size(3583), page_with_lz4_size(3584)
    # a region whose LZ4 output sits just below and at its limit: random head, zero tail
    region = 16 * PS
    limit = raw_limit(region)
    base = rand(region, seed=9)
    edge = {}
    lo, hi = 0, region
    while lo < hi:   # the shortest random head whose output reaches the limit
        mid = (lo + hi) // 2
        if lz4_len(base[:mid] + bytes(region - mid)) >= limit:
            hi = mid
        else:
            lo = mid + 1
    for k in range(max(0, lo - 40), min(region, lo + 40)):
        n = lz4_len(base[:k] + bytes(region - k))
        if n in (limit - 1, limit):
            edge.setdefault(n, base[:k] + bytes(region - k))
    cases = [(below + at, PS, [3583, PS])]
    for n, data in edge.items():
        cases.append((data, region, [n if n < limit else region]))
    assert len(cases) >= 2
    for data, block, want in cases:
        want_sizes, want_parts = coding.encode_parts(data, block)
        assert want_sizes == want
        paths = [lz4native.encode_loop]
        if nat.batch is not None:
            paths.append(lz4batch.encode)
        for encode in paths:
            sizes, parts = encode(nat, bytearray(data), len(data), bytearray(2 * len(data)),
                                  block, 1)
            assert sizes == want_sizes, encode
            assert b"".join(parts) == b"".join(want_parts)
