"""index_stream checks record CRCs in the pool beside its scan: whatever the damage, it
must say what a reader checking each record as it goes says first."""

import random

import pytest

from zdtmpy.codec.coding import LZ4_CODEC
from zdtmpy.transport import streamformat as sf
from zdtmpy.transport.streamindex import index_stream

PS = 4096


def a_stream(path):
    rnd = random.Random(3)
    with open(path, "wb") as f:
        w = sf.StreamWriter(f)
        meta = w.open("pagemap-1.img")
        pages = w.open("pages-1.img")
        for i in range(6):
            data = b"".join([b"text %d " % i * 600][:1] + [bytes(PS), rnd.randbytes(PS)])
            data = (data[:3 * PS] * 3)[:9 * PS]
            sizes, payload = LZ4_CODEC.encode_chunk(data, PS)
            w.blocks(pages, PS, len(data), sizes, payload)
            w.write(meta, rnd.randbytes(300 + i))
        w.close(pages)
        w.close(meta)
        w.end()
    return path.read_bytes()


def first_problem(path):
    """What a reader that checks every record as it reads it says (None: nothing)."""
    with open(path, "rb") as f:
        try:
            for _ in sf.StreamReader(f, str(path)):
                pass
        except sf.StreamError as exc:
            return str(exc)
    return None


def test_index_reports_what_a_checking_reader_reports_first(tmp_path):
    good = a_stream(tmp_path / "good")
    assert first_problem(tmp_path / "good") is None
    assert set(index_stream(tmp_path / "good").files) == {"pagemap-1.img", "pages-1.img"}
    rnd = random.Random(11)
    bad = tmp_path / "bad"
    seen = set()
    for case in range(300):
        data = bytearray(good)
        if case % 10 == 0:
            data = data[:rnd.randrange(len(data))]
        else:
            for _ in range(1 + case % 3):
                data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        bad.write_bytes(data)
        expect = first_problem(bad)
        if expect is None:
            index_stream(bad)
            continue
        with pytest.raises(sf.StreamError) as got:
            index_stream(bad)
        assert str(got.value) == expect, case
        seen.add(expect.split(": ", 1)[1].split(" (")[0].split(" in ")[0][:30])
    assert len(seen) >= 4   # checksum, header, truncation... not one kind only
