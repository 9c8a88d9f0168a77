"""PageReader across parent chains mixing plain, per-page and region layers."""

import os
import random
from pathlib import Path

import pytest

from zdtmpy.codec import Compression
from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError
from zdtmpy.images import PE_LAZY, PE_PARENT, PE_PRESENT, ImageSet, PageReader

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1"
PS = 4096
P = PE_PRESENT
A, B = 0x100000, 0x200000


def text(n, tag):
    return b"".join((b"%s page %d: some compressible words\n" % (tag, i) * 200)[:PS]
                    for i in range(n))


def rand(n, seed):
    return random.Random(seed).randbytes(n * PS)


@pytest.fixture
def chain(tmp_path):
    l1a, l1b = text(8, b"one"), rand(4, 1)
    l2a = text(3, b"two") + rand(1, 2)
    l3a, l3b = text(2, b"three"), bytes(PS) + rand(1, 3)
    make_layer(tmp_path / "1", {1: [(A, 8, P, l1a), (B, 4, P, l1b)]})
    make_layer(tmp_path / "2", {1: [(A, 4, PE_PARENT, None), (A + 4 * PS, 4, P, l2a),
                                    (B, 4, PE_PARENT, None)]},
               parent="../1", spec=Compression("page"))
    make_layer(tmp_path / "3", {1: [(A, 2, P, l3a), (A + 2 * PS, 6, PE_PARENT, None),
                                    (B, 2, PE_PARENT, None), (B + 2 * PS, 2, P, l3b),
                                    (0x300000, 1, PE_LAZY, None)]},
               parent="../2", spec=Compression("region", 2 * PS))
    expect_a = l3a + l1a[2 * PS:4 * PS] + l2a
    expect_b = l1b[:2 * PS] + l3b
    return tmp_path, expect_a, expect_b


def test_reads_across_three_formats(chain):
    root, expect_a, expect_b = chain
    with PageReader(root / "3") as r:
        assert r.read(1, A, 8) == expect_a
        assert r.read(1, B, 4) == expect_b
        for i in range(8):                                      # page by page too
            assert r.read(1, A + i * PS, 1) == expect_a[i * PS:(i + 1) * PS]
        assert r.read(1, A + 3 * PS, 3) == expect_a[3 * PS:6 * PS]


def test_locate(chain):
    root = chain[0]
    r = PageReader(root / "3")
    loc = r.locate(1, A + PS)
    assert (Path(loc.layer_dir).name, loc.pagemap_file, loc.entry_index, loc.block_index) \
        == ("3", "pagemap-1.img", 0, 0)                      # region of 2 pages
    loc = r.locate(1, A + 3 * PS)
    assert (Path(loc.layer_dir).name, loc.entry_index, loc.block_index) == ("1", 0, 3)
    loc = r.locate(1, A + 6 * PS + 17)
    assert (Path(loc.layer_dir).name, loc.entry_index, loc.block_index) == ("2", 1, 2)


def test_lazy_and_missing_pages(chain):
    r = PageReader(chain[0] / "3")
    with pytest.raises(ImageError, match="PE_LAZY"):
        r.read(1, 0x300000, 1)
    with pytest.raises(ImageError, match="not dumped"):
        r.read(1, 0x400000, 1)
    assert r.read(1, A - PS, 2, missing="zero") == bytes(PS) + chain[1][:PS]


def test_parent_lacks_page(tmp_path):
    make_layer(tmp_path / "1", {1: [(A, 1, P, bytes(PS))]})
    make_layer(tmp_path / "2", {1: [(A, 2, PE_PARENT, None)]}, parent="../1")
    with pytest.raises(ImageError, match="parent layer .* has no pagemap-1.img entry"):
        PageReader(tmp_path / "2").read(1, A, 2)


def test_parent_flag_without_parent_link(tmp_path):
    make_layer(tmp_path / "1", {1: [(A, 1, PE_PARENT, None)]})
    with pytest.raises(ImageError, match="no parent link"):
        PageReader(tmp_path / "1").read(1, A, 1)


def test_reads_only_needed_blocks(tmp_path):
    data = text(6, b"x")
    make_layer(tmp_path, {1: [(A, 6, P, data)]}, spec=Compression("page"))
    e = ImageSet(tmp_path).pagemaps[1].entries[0]
    pages = tmp_path / "pages-1.img"
    blob = bytearray(pages.read_bytes())
    start = e.offset + e.block_offsets[4]
    blob[start:start + e.sizes[4]] = b"\xff" * e.sizes[4]     # garbage in block 4 only
    pages.write_bytes(bytes(blob))
    r = PageReader(tmp_path)
    assert r.read(1, A, 4) == data[:4 * PS]
    assert r.read(1, A + 5 * PS, 1) == data[5 * PS:]
    with pytest.raises(ImageError, match=r"pagemap-1.img: entry 0 block 4: LZ4 block"):
        r.read(1, A + 4 * PS, 1)


def test_truncated_pages_file(tmp_path):
    make_layer(tmp_path, {1: [(A, 3, P, text(3, b"t"))]}, spec=Compression("page"))
    pages = tmp_path / "pages-1.img"
    os.truncate(pages, pages.stat().st_size - 1)
    with pytest.raises(ImageError, match="payload bytes but pages-1.img holds"):
        PageReader(tmp_path).read(1, A, 1)


def test_shmem_and_vmas_and_pids():
    r = PageReader(DATA / "plain")
    assert r.pids() == [25828, 25829]
    vmas = r.vmas(25828)
    assert vmas and all(v.start < v.end for v in vmas)
    with pytest.raises(ImageError, match="mm-999.img"):
        r.vmas(999)


def test_fixture_plain_and_compressed_read_the_same():
    plain, comp = PageReader(DATA / "plain"), PageReader(DATA / "compressed")
    for pid in plain.pids():
        for e in plain.layers[0].pagemaps[pid].entries:
            assert comp.read(pid, e.vaddr, e.nr_pages) == plain.read(pid, e.vaddr, e.nr_pages)


@pytest.mark.parametrize("spec", [None, Compression("page"), Compression("region", 2 * PS)])
def test_read_into_a_dirty_buffer_equals_read(tmp_path, spec):
    """read_into writes every byte of a reused buffer: zero blocks (one by one and through
    the batch decoder), holes read as zeros, plain and compressed entries."""
    data = bytes(2 * PS) + text(2, b"a") + bytes(4 * PS) + rand(2, 7) + bytes(PS)
    make_layer(tmp_path, {1: [(A, 11, P, data)]}, spec=spec)
    r = PageReader(tmp_path)
    for start, n in ((0, 11), (0, 1), (2, 6), (4, 4), (8, 3)):
        buf = bytearray(b"\xaa" * (n + 2) * PS)                 # stale bytes everywhere
        r.read_into(1, A + start * PS, memoryview(buf)[:n * PS])
        assert bytes(buf[:n * PS]) == r.read(1, A + start * PS, n) \
            == data[start * PS:(start + n) * PS]
        assert buf[n * PS:] == b"\xaa" * 2 * PS                # nothing past the view
    buf = bytearray(b"\xaa" * 3 * PS)                          # a hole before the entry
    r.read_into(1, A - 2 * PS, buf, missing="zero")
    assert bytes(buf) == bytes(2 * PS) + data[:PS]
    with pytest.raises(ValueError, match="whole pages"):
        r.read_into(1, A, bytearray(PS + 1))
