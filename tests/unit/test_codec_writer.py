"""PagemapWriter: layout decisions (alignment rule, all-raw, all-zero), streaming, abort."""

import os
import random

import lz4.block
import pytest

from zdtmpy.codec import Compression
from zdtmpy.compress.writer import PagemapWriter
from zdtmpy.errors import ImageError
from zdtmpy.images import (
    INVENTORY_MAGIC,
    PE_LAZY,
    PE_PARENT,
    PE_PAYLOAD_ALIGNED,
    PE_PRESENT,
    Pagemap,
    PageReader,
    messages,
    write_image,
)

PS = 4096
P = PE_PRESENT


def rand(n, seed=1):
    return random.Random(seed).randbytes(n)


def text(n_pages, seed=0):
    return b"".join((b"page %d of some text, compressible\n" % (seed + i) * 200)[:PS]
                    for i in range(n_pages))


def write(tmp_path, entries, spec):
    with PagemapWriter(tmp_path, "pagemap-1.img", 1, spec) as w:
        for entry in entries:
            w.add(*entry)
    pm = Pagemap.load(tmp_path / "pagemap-1.img")
    assert pm.payload_size == os.path.getsize(tmp_path / "pages-1.img")
    assert pm.problems() == []
    return pm, (tmp_path / "pages-1.img").read_bytes()


def test_first_stored_block_raw_pads_and_flags(tmp_path):
    first = text(1)                              # LZ4: leaves the payload unaligned
    second = bytes(PS) + rand(PS) + text(2)      # zero, then raw first stored block
    pm, pages = write(tmp_path, [(0x10000, 1, P, first), (0x20000, 4, P, second)],
                      Compression("page"))
    e0, e1 = pm.entries
    assert not e0.flags & PE_PAYLOAD_ALIGNED
    assert e1.flags & PE_PAYLOAD_ALIGNED
    assert e1.offset == PS and e0.length < PS
    assert pages[e0.length:PS] == bytes(PS - e0.length)       # zero padding
    assert e1.sizes[0] == 0 and e1.sizes[1] == PS
    assert pages[PS:2 * PS] == rand(PS)                       # raw page, page aligned


def test_all_raw_entry_is_plain_but_aligned(tmp_path):
    pm, pages = write(tmp_path, [(0x10000, 1, P, text(1)), (0x20000, 3, P, rand(3 * PS))],
                      Compression("page"))
    e = pm.entries[1]
    assert not e.compressed
    assert not e.msg.compressed_size and not e.msg.HasField("total_compressed_size")
    assert e.flags == P | PE_PAYLOAD_ALIGNED
    assert e.offset == PS and pages[PS:] == rand(3 * PS)


def test_all_zero_entry_keeps_metadata_without_padding(tmp_path):
    pm, _pages = write(tmp_path, [(0x10000, 1, P, text(1)), (0x20000, 3, P, bytes(3 * PS)),
                                 (0x30000, 1, P, text(1, 5))], Compression("page"))
    e = pm.entries[1]
    assert e.compressed and list(e.sizes) == [0, 0, 0]
    assert e.msg.HasField("total_compressed_size") and e.total == 0
    assert not e.flags & PE_PAYLOAD_ALIGNED
    assert e.offset == pm.entries[0].length == pm.entries[2].offset


def test_region_mode_metadata_and_short_last_region(tmp_path):
    data = text(10)
    pm, pages = write(tmp_path, [(0x100000, 10, P, data)], Compression("region", 4 * PS))
    e = pm.entries[0]
    assert e.msg.region_pages == 4 and len(e.sizes) == 3
    third = lz4.block.decompress(pages[sum(e.sizes[:2]):], uncompressed_size=2 * PS)
    assert third == data[8 * PS:]


def test_off_mode_is_plain(tmp_path):
    data = rand(2 * PS) + bytes(PS)
    pm, pages = write(tmp_path, [(0x1000, 3, P, data), (0x8000, 2, PE_PARENT, b""),
                                 (0xa000, 1, PE_LAZY, b"")], Compression("off"))
    assert pages == data
    assert [e.flags for e in pm.entries] == [P, PE_PARENT, PE_LAZY]
    assert not any(e.compressed for e in pm.entries)


def test_data_as_pieces_streams(tmp_path):
    data = text(300) + rand(100 * PS)
    pieces = [data[i:i + 5000] for i in range(0, len(data), 5000)]   # odd piece sizes
    pm, _pages = write(tmp_path, [(0x100000, 400, P, iter(pieces))], Compression("page"))
    assert pm.entries[0].compressed
    inv = messages.InventoryEntry(img_version=3, compress=1)
    write_image(tmp_path / "inventory.img", INVENTORY_MAGIC, [inv])
    assert PageReader(tmp_path).read(1, 0x100000, 400) == data


def test_add_compressed_keeps_given_blocks(tmp_path):
    lz = lz4.block.compress(text(1), store_size=False)
    raw = rand(PS)
    with PagemapWriter(tmp_path, "pagemap-1.img", 1, Compression("page")) as w:
        w.add_compressed(0x1000, 3, P, [len(lz), 0, PS], lz + raw)
    pm = Pagemap.load(tmp_path / "pagemap-1.img")
    assert list(pm.entries[0].sizes) == [len(lz), 0, PS]
    assert (tmp_path / "pages-1.img").read_bytes() == lz + raw


def test_add_compressed_rejects_garbage(tmp_path):
    w = PagemapWriter(tmp_path, "pagemap-1.img", 1, Compression("page"))
    with pytest.raises(ImageError, match="page 0"):
        w.add_compressed(0x1000, 1, P, [100], b"\xff" * 100)
    w.abort()
    assert os.listdir(tmp_path) == []


def test_add_compressed_into_region_writer_recompresses(tmp_path):
    lz = lz4.block.compress(text(1), store_size=False)
    with PagemapWriter(tmp_path, "pagemap-1.img", 1, Compression("region", 8 * PS)) as w:
        w.add_compressed(0x1000, 2, P, [len(lz), 0], lz)
    e = Pagemap.load(tmp_path / "pagemap-1.img").entries[0]
    assert e.msg.region_pages == 8 and len(e.sizes) == 1


@pytest.mark.parametrize("entry,what", [
    ((0x1001, 1, P, bytes(PS)), "aligned"),
    ((0x1000, 0, P, b""), "positive"),
    ((0x1000, 1, P | PE_PARENT, bytes(PS)), "together"),
    ((0x1000, 2, P, bytes(PS)), "expected"),
    ((0x1000, 1, PE_PARENT, bytes(PS)), "without PE_PRESENT"),
])
def test_bad_entries(tmp_path, entry, what):
    w = PagemapWriter(tmp_path, "pagemap-1.img", 1, Compression("page"))
    with pytest.raises(ImageError, match=what):
        w.add(*entry)
    w.abort()
    assert os.listdir(tmp_path) == []


def test_unsorted_entries_are_refused(tmp_path):
    with pytest.raises(ImageError, match="overlaps"), \
            PagemapWriter(tmp_path, "pagemap-1.img", 1) as w:
        w.add(0x5000, 2, PE_PARENT)
        w.add(0x6000, 1, PE_PARENT)
    assert os.listdir(tmp_path) == []          # the context manager aborted


# -- pipelined entries (begin/feed, as the page server writes) ------------------------------

def _mixed_entries():
    """Entries whose alignment decisions depend on every earlier entry's stored size."""
    return [
        (0x100000, 3, P, text(3)),                                    # LZ4: unaligned end
        (0x200000, 2, PE_PARENT, b""),
        (0x300000, 300, P, bytes(PS) + rand(50 * PS) + text(249)),     # raw first stored
        (0x500000, 4, PE_LAZY, b""),
        (0x600000, 256, P, bytes(256 * PS)),                          # all zero
        (0x800000, 70, P | PE_LAZY, rand(7 * PS, 3) * 10),            # all raw
        (0xa00000, 513, P, text(500, 9) + bytes(13 * PS)),            # short last chunk
    ]


@pytest.mark.parametrize("how", ["feed", "feed_read"])
@pytest.mark.parametrize("threads", [None, 2], ids=["threads-default", "threads-2"])
@pytest.mark.parametrize("spec", [Compression("off"), Compression("page"),
                                  Compression("region", 16 * PS)],
                         ids=["off", "page", "region64k"])
def test_fed_entries_are_byte_identical_to_added_ones(tmp_path, spec, threads, how,
                                                      monkeypatch):
    """feed() hands over filled buffers; feed_read() lets the worker that encodes a chunk
    read it (with 2 workers under a compressing spec, never the caller's thread)."""
    import threading

    if threads:   # with workers, an all-zero fed chunk is decided in the caller's thread
        from zdtmpy.compress import pipeline
        monkeypatch.setattr(pipeline, "_WORKERS", threads)
    added, fed = tmp_path / "added", tmp_path / "fed"
    added.mkdir()
    fed.mkdir()
    write(added, _mixed_entries(), spec)
    released, readers = [], []
    step = 64 * PS   # whole blocks in every mode here
    with PagemapWriter(fed, "pagemap-1.img", 1, spec) as w:
        for vaddr, nr, flags, data in _mixed_entries():
            w.begin(vaddr, nr, flags)
            for off in range(0, len(data), step):
                buf = bytearray(data[off:off + step])   # each piece its own buffer
                if how == "feed":
                    w.feed(buf, len(buf), released.append)
                    continue

                def read(buf: bytearray = buf) -> bytearray:
                    readers.append(threading.get_ident())
                    return buf
                w.feed_read(len(buf), read, released.append)
        w.drain()
        assert w.entries == len(_mixed_entries())
    for name in ("pagemap-1.img", "pages-1.img"):
        assert (fed / name).read_bytes() == (added / name).read_bytes(), name
    assert sum(len(b) for b in released) == sum(len(e[3]) for e in _mixed_entries())
    if how == "feed_read":
        assert len(readers) == len(released)
        if threads and spec.enabled:
            assert threading.get_ident() not in readers


def test_feeding_errors_leave_nothing(tmp_path):
    w = PagemapWriter(tmp_path, "pagemap-1.img", 1, Compression("region", 4 * PS))
    with pytest.raises(ImageError, match="without a begun"):
        w.feed(bytearray(PS), PS)
    w.begin(0x1000, 8, P)
    with pytest.raises(ImageError, match="whole blocks"):
        w.feed(bytearray(PS), PS)             # a region is 4 pages
    w.feed(bytearray(text(4)), 4 * PS)
    with pytest.raises(ImageError, match=f"only {4 * PS} of {8 * PS}"):
        w.add(0x100000, 1, PE_PARENT)          # the begun entry is not complete
    with pytest.raises(ImageError, match="were fed"):
        w.close()
    w.abort()
    assert os.listdir(tmp_path) == []
