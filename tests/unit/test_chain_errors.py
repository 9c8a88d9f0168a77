"""Broken chains are reported clearly (ImageError / Problem naming layer, file and what was
expected) and never crash the reader, verify, rebase or decompress; refused rebases leave
the directory byte-identical."""

import functools
import os
from pathlib import Path

import pytest

import zdtmpy.compress.rebase as rebase_mod
from zdtmpy.compress import Compression, decompress_dir, recover, verify_dir
from zdtmpy.compress.chain import chain_problems, same_content, verify_chain
from zdtmpy.compress.install import install
from zdtmpy.compress.rebase import rebase_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError
from zdtmpy.images import (
    MM_MAGIC,
    PE_PARENT,
    PE_PRESENT,
    ImageSet,
    PageReader,
    messages,
    write_image,
)

PS = 4096
P = PE_PRESENT
A = 0x40000000


def page_text(n, tag):
    return b"".join((b"%s %d " % (tag, i) * PS)[:PS] for i in range(n))


def snapshot(path):
    """Everything a rewrite could touch: names, file bytes, link texts."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
            ("dir", None) if p.is_dir() else ("file", p.read_bytes())
    return out


def base(path, pid=1, spec=None, data=None):
    return make_layer(path, {pid: [(A, 8, P, data or page_text(8, b"base"))]}, spec=spec)


def child(path, parent, pid=1, spec=None):
    """A layer: pages 0-3 in the parent, 4-7 here."""
    return make_layer(path, {pid: [(A, 4, PE_PARENT, None),
                                   (A + 4 * PS, 4, P, page_text(4, b"top"))]},
                      parent=parent, spec=spec or Compression("page"))


def all_entry_points(top):
    """Reader, verify, verify_chain and chain-wide decompress on a broken chain: each one
    reports (ImageError or problems) and none raises anything else."""
    with pytest.raises(ImageError) as reader_err, PageReader(top) as r:
        r.read(1, A, 8)
    problems = verify_chain(top)
    assert problems and all(p.layer and p.file and p.what for p in problems)
    verify_dir(top, chain=True)  # must not raise (it does not look at PE_PARENT coverage)
    try:
        decompress_dir(top, in_place=True, chain=True)
        decompress_err = None
    except ImageError as exc:
        decompress_err = str(exc)
    return str(reader_err.value), problems, decompress_err


def test_missing_parent_target(tmp_path):
    top = child(tmp_path / "2", "../1")  # 1 never made
    err, problems, dec = all_entry_points(top)
    assert "parent link '../1' points to a missing directory" in err and str(tmp_path / "1") in err
    assert any(p.file == "parent" and "missing directory" in p.what for p in problems)
    assert "missing directory" in dec


def test_parent_not_an_image_set(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "notes.txt").write_text("not a dump")
    top = child(tmp_path / "2", "../1")
    err, problems, dec = all_entry_points(top)
    assert "does not lead to a usable image set" in err and "no inventory.img" in err
    assert any("no inventory.img" in p.what for p in problems)
    assert "no inventory.img" in dec
    assert any("no inventory.img" in p.what for p in verify_dir(top, chain=True))


def test_parent_page_missing(tmp_path):
    make_layer(tmp_path / "1", {1: [(A, 2, P, page_text(2, b"b"))]})  # pages 2-3 absent
    top = child(tmp_path / "2", "../1")
    err, problems, dec = all_entry_points(top)
    assert "PE_PARENT" in err and "has no pagemap-1.img entry" in err
    (p,) = [p for p in problems if "not in the parent layer" in p.what]
    assert p.file == "pagemap-1.img" and p.entry == 0 and p.layer == str(top)
    assert f"{A + 2 * PS:#x}-{A + 4 * PS:#x}" in p.what
    assert dec is None  # decompress does not need the parent's pages: it just works


def test_parent_pid_without_pagemap(tmp_path):
    make_layer(tmp_path / "1", {7: [(A, 8, P, page_text(8, b"b"))]}, pids=[1, 7])
    top = make_layer(tmp_path / "2", {1: [(A, 4, PE_PARENT, None)], 7: [(A, 1, P, bytes(PS))]},
                     parent="../1", pids=[1, 7])
    (p,) = chain_problems(top)
    assert "no pagemap-1.img" in p.what


def test_pe_parent_without_link(tmp_path):
    top = make_layer(tmp_path / "2", {1: [(A, 4, PE_PARENT, None)]})
    (p,) = chain_problems(top)
    assert p.entry == 0 and "no parent link" in p.what
    with pytest.raises(ImageError, match="PE_PARENT but .* has no parent link"):
        PageReader(top).read(1, A, 1)
    with pytest.raises(ImageError, match="is PE_PARENT but the directory has no parent"):
        rebase_dir(top, base(tmp_path / "1"))


def test_cycle_of_links(tmp_path):
    child(tmp_path / "1", "../2")
    top = child(tmp_path / "2", "../1")
    err, problems, dec = all_entry_points(top)
    assert "forms a cycle" in err
    assert any("forms a cycle" in p.what for p in problems)
    assert "forms a cycle" in dec


def test_self_link(tmp_path):
    top = child(tmp_path / "1", ".")
    err, problems, _ = all_entry_points(top)
    assert "cycle" in err and any("cycle" in p.what for p in problems)


def test_symlink_loop(tmp_path):
    top = child(tmp_path / "1", "parent")  # ELOOP: resolves to nothing
    err, problems, dec = all_entry_points(top)
    assert "parent link 'parent'" in err and "parent link 'parent'" in dec
    assert problems[0].file == "parent"


def test_parent_from_another_tree(tmp_path):
    base(tmp_path / "1", pid=5)
    top = child(tmp_path / "2", "../1", pid=1)
    err, problems, dec = all_entry_points(top)
    assert "another process" in err and "[5] vs [1]" in err
    assert any("another process tree" in p.what for p in problems)
    assert "another process tree" in dec


def write_mm(path, pid, exec_start):
    vmas = [messages.VmaEntry(start=exec_start, end=exec_start + PS, pgoff=0, shmid=0,
                              prot=5, flags=2, status=1),
            messages.VmaEntry(start=A, end=A + 8 * PS, pgoff=0, shmid=0, prot=3, flags=0x22,
                              status=1)]
    write_image(Path(path) / f"mm-{pid}.img", MM_MAGIC, [messages.MmEntry(vmas=vmas)])


def test_same_pids_other_run_of_the_program(tmp_path):
    """Both trees are pid 1 of their namespace: the program text's address tells them apart."""
    one, two = base(tmp_path / "1"), base(tmp_path / "2", data=page_text(8, b"other"))
    write_mm(one, 1, 0x555500000000)
    write_mm(two, 1, 0x563400000000)
    before = snapshot(two)
    with pytest.raises(ImageError, match="another process tree: pid 1 has no executable mapping"):
        rebase_dir(two, one)
    assert snapshot(two) == before
    write_mm(two, 1, 0x555500000000)  # same run: accepted
    rebase_dir(two, one, in_place=True)
    assert chain_problems(two) == []
    write_mm(two, 1, 0x563400000000)
    (p,) = chain_problems(two)
    assert p.file == "parent" and "another process tree" in p.what


@pytest.mark.parametrize("case", ["missing-parent", "parent-not-dir", "parent-not-images",
                                  "dir-not-images", "self", "descendant", "other-tree",
                                  "already-layer", "parent-chain-cycle", "bad-parent-version"])
def test_rebase_refusals_leave_dir_identical(tmp_path, case):
    d = base(tmp_path / "d", data=page_text(8, b"new"))
    parent = tmp_path / "p"
    expect = {
        "missing-parent": "the parent directory does not exist",
        "parent-not-dir": "the parent is not a directory",
        "parent-not-images": "no inventory.img",
        "dir-not-images": "no inventory.img",
        "self": "cycle of parent links",
        "descendant": "cycle of parent links",
        "other-tree": "another process tree",
        "already-layer": "already has a parent link",
        "parent-chain-cycle": "forms a cycle",
        "bad-parent-version": "img_version 1 is not supported",
    }[case]
    if case == "parent-not-dir":
        parent.write_text("x")
    elif case == "parent-not-images":
        parent.mkdir()
    elif case == "dir-not-images":
        base(parent)
        os.unlink(d / "inventory.img")
    elif case == "self":
        parent = d
    elif case == "descendant":
        child(parent, "../d")
    elif case == "other-tree":
        base(parent, pid=9)
    elif case == "already-layer":
        base(parent)
        os.symlink("../p", d / "parent")
    elif case == "parent-chain-cycle":
        child(parent, "../q")
        child(tmp_path / "q", "../p")
    elif case == "bad-parent-version":
        make_layer(parent, {1: [(A, 8, P, page_text(8, b"base"))]}, img_version=1)
    before = snapshot(d)
    with pytest.raises(ImageError) as exc:
        rebase_dir(d, parent)
    assert expect in str(exc.value)
    assert "refusing to rebase" in str(exc.value)
    assert snapshot(d) == before


def test_broken_parent_found_while_reading_changes_nothing(tmp_path):
    """A parent whose own PE_PARENT pages are missing further down fails the rebase after
    staging began: the stage is discarded and the directory stays identical."""
    make_layer(tmp_path / "0", {1: [(A, 1, P, page_text(1, b"b"))]})
    make_layer(tmp_path / "1", {1: [(A, 8, PE_PARENT, None)]}, parent="../0")
    d = base(tmp_path / "2")
    before = snapshot(d)
    with pytest.raises(ImageError, match="rebase onto .* failed, nothing was changed: .*PE_PARENT"):
        rebase_dir(d, tmp_path / "1", Compression("region", 8 * PS))
    assert snapshot(d) == before


def test_interrupted_rebase_is_rolled_forward(tmp_path, monkeypatch):
    one = base(tmp_path / "1")
    two = base(tmp_path / "2", data=page_text(4, b"base") + page_text(4, b"new"))
    full = tmp_path / "full"
    os.system(f"cp -a {two} {full}")
    # crash after the journal and two of the five files (pages, pagemap, inventory, link)
    monkeypatch.setattr(rebase_mod, "install", functools.partial(install, crash_after=2))
    rebase_dir(two, one, Compression("page"), in_place=True)
    assert ImageSet(two).journal_pending
    assert any("interrupted" in p.what for p in verify_dir(two))
    with pytest.raises(ImageError, match="interrupted zdtmpy rewrite is pending"):
        PageReader(two).read(1, A, 8)
    assert recover(two) is True
    assert os.readlink(two / "parent") == "../1"
    assert verify_chain(two) == [] and same_content(full, two) == []
