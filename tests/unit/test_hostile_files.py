"""Image files that are not what they claim: FIFOs, directories, links, second spellings,
orphans and foreign magics give a clean error or a verify problem, never a hang."""

import os
import shutil
import signal
import struct
from pathlib import Path

import pytest

from zdtmpy.cli import main
from zdtmpy.compress import Compression, compress_dir, decompress_dir, verify_dir
from zdtmpy.errors import ImageError
from zdtmpy.images import SERVICE_MAGIC, PageReader, messages, read_image, write_image
from zdtmpy.images.pagemap import entry_nr_pages, set_entry_nr_pages

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1"
PAGE = Compression("page")


@pytest.fixture(autouse=True)
def deadline():
    """A hung open() or read() fails the test instead of hanging the run."""
    def expired(signum, frame):
        raise TimeoutError("deadline: the tool hung")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def copy(kind, tmp_path):
    dst = tmp_path / kind
    shutil.copytree(DATA / kind, dst)
    return dst


def snapshot(d):
    return {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else os.lstat(p).st_mode)
            for p in d.iterdir()}


def every_tool_refuses(d, capsys, match, show_reads_it=True):
    """verify reports it; show, compress, decompress and the reader fail cleanly; no change."""
    before = snapshot(d)
    problems = [str(p) for p in verify_dir(d)]
    assert any(match in p for p in problems), problems
    compressed = d.name == "compressed"
    rewrite = "decompress" if compressed else "compress"  # the other one has nothing to do
    for argv in (["verify", str(d)], ["show", str(d)], [rewrite, str(d)]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if argv[0] != "show" or show_reads_it:
            assert rc == 1, (argv, err)
    with pytest.raises(ImageError):
        decompress_dir(d) if compressed else compress_dir(d, PAGE)
    assert snapshot(d) == before


@pytest.mark.parametrize("kind", ["plain", "compressed"])
@pytest.mark.parametrize("name", ["pagemap-25828.img", "inventory.img", "pages-1.img"])
def test_fifo_image_file_does_not_hang(tmp_path, capsys, kind, name):
    d = copy(kind, tmp_path)
    os.unlink(d / name)
    os.mkfifo(d / name)
    every_tool_refuses(d, capsys, "FIFO", show_reads_it=not name.startswith("pages"))
    with pytest.raises(ImageError, match="FIFO"):
        PageReader(d).read(25828, 0x555ba8c40000, 1)


@pytest.mark.parametrize("kind", ["plain", "compressed"])
def test_pages_file_that_is_a_directory(tmp_path, capsys, kind):
    d = copy(kind, tmp_path)
    os.unlink(d / "pages-2.img")
    (d / "pages-2.img").mkdir()
    every_tool_refuses(d, capsys, "pages-2.img: is a directory", show_reads_it=False)


def test_unreadable_pages_file_is_a_clean_error(tmp_path, capsys):
    d = copy("compressed", tmp_path)
    os.unlink(d / "pages-1.img")
    os.symlink("/proc/self/mem", d / "pages-1.img")  # unreadable even for root as a file
    every_tool_refuses(d, capsys, "pages-1.img", show_reads_it=False)


def test_orphan_pages_file(tmp_path, capsys):
    d = copy("plain", tmp_path)
    os.unlink(d / "pagemap-25829.img")
    problems = [str(p) for p in verify_dir(d)]
    assert any("pages-2.img: orphan pages file" in p for p in problems), problems
    assert main(["verify", str(d)]) == 1


@pytest.mark.parametrize("name", ["core-25828.img", "pagemap-25828.img", "pages-1.img",
                                  "mm-25829.img"])
def test_symlinked_image_file(tmp_path, name):
    d = copy("plain", tmp_path)
    os.rename(d / name, tmp_path / name)
    os.symlink(tmp_path / name, d / name)
    problems = [str(p) for p in verify_dir(d)]
    assert any(f"{name}: is a symlink" in p for p in problems), problems


def test_second_spelling_of_a_pid(tmp_path):
    d = copy("plain", tmp_path)
    shutil.copy(d / "pagemap-25828.img", d / "pagemap-025828.img")
    problems = [str(p) for p in verify_dir(d)]
    assert any("pagemap-025828.img: not a name criu writes" in p for p in problems), problems
    assert any("pagemap-25828.img" in p for p in problems)


def test_pagemap_with_the_stats_magic(tmp_path):
    d = copy("plain", tmp_path)
    data = (d / "pagemap-25828.img").read_bytes()
    (d / "pagemap-25828.img").write_bytes(struct.pack("<I", SERVICE_MAGIC) + data[4:])
    problems = [str(p) for p in verify_dir(d)]
    assert any("does not belong to a pagemap image" in p for p in problems), problems
    with pytest.raises(ImageError, match="does not belong"):
        PageReader(d).read(25828, 0x555ba8c40000, 1)


def test_zero_region_bomb_is_bounded_by_the_vmas(tmp_path, capsys):
    """A few KiB of pagemap announcing ~16 GiB of zero 4 MiB regions: refused at once."""
    d = copy("plain", tmp_path)
    compress_dir(d, Compression("region", 4 << 20), in_place=True)
    path = d / "pagemap-25828.img"
    raw = read_image(path)
    msg = messages.PagemapEntry.FromString(raw.entries[-1])
    extra = 4000  # zero blocks: one byte each in the pagemap, 4 MiB each decoded
    msg.compressed_size.extend([0] * extra)
    set_entry_nr_pages(msg, entry_nr_pages(msg) + extra * 1024)
    raw.entries[-1] = msg.SerializeToString()
    write_image(path, raw.magic, raw.entries)
    assert path.stat().st_size < 16 << 10
    before = snapshot(d)
    problems = [str(p) for p in verify_dir(d)]
    assert any("outside the VMAs of mm-25828.img" in p for p in problems), problems
    with pytest.raises(ImageError, match="outside the VMAs"):
        decompress_dir(d)
    assert main(["decompress", str(d)]) == 1
    assert "outside the VMAs" in capsys.readouterr().err
    assert snapshot(d) == before
