"""page_runs: the same pages cut into entries differently compare equal; anything else that
differs (a page, a flag, a gap, a field) still differs."""

from pathlib import Path

from pagemapruns import page_runs

from zdtmpy.compress.writer import PagemapWriter
from zdtmpy.images import Pagemap
from zdtmpy.images.pagemap import PAGE_SIZE, PE_LAZY, PE_PRESENT

BASE = 0x7F0000000000


def write(tmp_path: Path, name: str, entries: list[tuple[int, int, int]]) -> Pagemap:
    """A pagemap and its pages file in tmp_path/name: entries are (first page, pages, flags);
    page i holds its own number."""
    d = tmp_path / name
    d.mkdir()
    with PagemapWriter(d, "pagemap-1.img", 1) as w:
        for first, n, flags in entries:
            data = b"".join(i.to_bytes(8, "little") * (PAGE_SIZE // 8)
                            for i in range(first, first + n)) if flags & PE_PRESENT else b""
            w.add(BASE + first * PAGE_SIZE, n, flags, data)
    return Pagemap.load(d / "pagemap-1.img")


def test_1024_pages_equal_four_entries_of_256(tmp_path):
    # the failure seen: one dump's entry of 1024 pages against the other's 256
    big = write(tmp_path, "big", [(0, 1024, PE_PRESENT), (2000, 3, PE_PRESENT)])
    cut = write(tmp_path, "cut", [(0, 256, PE_PRESENT), (256, 256, PE_PRESENT),
                                  (512, 256, PE_PRESENT), (768, 256, PE_PRESENT),
                                  (2000, 3, PE_PRESENT)])
    assert len(big.entries) != len(cut.entries)
    assert page_runs(big) == page_runs(cut)
    assert page_runs(big)[0][:2] == (BASE, 1024)
    assert ((tmp_path / "big" / big.pages_name).read_bytes()
            == (tmp_path / "cut" / cut.pages_name).read_bytes())


def test_a_gap_or_other_flags_are_not_joined(tmp_path):
    whole = page_runs(write(tmp_path, "whole", [(0, 8, PE_PRESENT)]))
    gap = page_runs(write(tmp_path, "gap", [(0, 4, PE_PRESENT), (5, 3, PE_PRESENT)]))
    lazy = page_runs(write(tmp_path, "lazy", [(0, 4, PE_PRESENT),
                                              (4, 4, PE_PRESENT | PE_LAZY)]))
    shorter = page_runs(write(tmp_path, "short", [(0, 7, PE_PRESENT)]))
    assert len({repr(r) for r in (whole, gap, lazy, shorter)}) == 4
    assert [r[:2] for r in gap] == [(BASE, 4), (BASE + 5 * PAGE_SIZE, 3)]


def test_other_fields_keep_entries_apart(tmp_path):
    pm = write(tmp_path, "pm", [(0, 4, PE_PRESENT), (4, 4, PE_PRESENT)])
    assert len(page_runs(pm)) == 1
    pm.entries[1].msg.nr_pages = 4   # the count in field 5 for the second entry only
    assert len(page_runs(pm)) == 2
