"""criu 4.2 pagemaps: the count lives in field 5 and the required field 2 is written as 0.
A rewrite must keep that shape, or a decompressed set no longer equals the dump."""

from zdtmpy.images import messages
from zdtmpy.images.pagemap import entry_nr_pages, set_entry_nr_pages


def test_v42_entry_keeps_compat_zero():
    e = messages.PagemapEntry(vaddr=0x1000, compat_nr_pages=0, nr_pages=7)
    set_entry_nr_pages(e, 3)
    assert (e.nr_pages, e.compat_nr_pages, entry_nr_pages(e)) == (3, 0, 3)


def test_v41_entry_uses_field_2_only():
    e = messages.PagemapEntry(vaddr=0x1000, compat_nr_pages=7)
    set_entry_nr_pages(e, 3)
    assert e.compat_nr_pages == 3 and not e.HasField("nr_pages")


def test_count_over_u32_moves_to_field_5():
    e = messages.PagemapEntry(vaddr=0x1000, compat_nr_pages=1)
    set_entry_nr_pages(e, 1 << 33)
    assert e.nr_pages == 1 << 33 and entry_nr_pages(e) == 1 << 33
