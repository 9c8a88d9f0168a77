"""rebase_dir / `zdtmpy rebase`: full dumps become layers whose unchanged pages live in the
parent, for every mix of representations; the chain reads back exactly the full dumps."""

import os
import random
import shutil

import pytest

from zdtmpy.cli import main
from zdtmpy.compress import decompress_dir, verify_dir
from zdtmpy.compress.chain import same_content, verify_chain
from zdtmpy.compress.rebase import rebase_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.images import PE_LAZY, PE_PARENT, PE_PRESENT, ImageSet, PageReader
from zdtmpy.matrix import CHAIN_KINDS, CHAIN_TRIPLES, compression

PS = 4096
P = PE_PRESENT | PE_LAZY  # what criu 4.1 writes for anonymous memory
A, B, C = 0x10000000, 0x20000000, 0x30000000
NA, NB = 200, 40  # pages; 200 is not a multiple of the 16-page (64K) region


def spec(name):
    return compression(name)


def text(n, tag):
    return b"".join((b"%s page %d: compressible words\n" % (tag, i) * 200)[:PS] for i in range(n))


def rand(n, seed):
    return random.Random(seed).randbytes(n * PS)


def mutate(data, pages, seed):
    """data with the given pages replaced by random ones."""
    out = bytearray(data)
    rng = random.Random(seed)
    for p in pages:
        out[p * PS:(p + 1) * PS] = rng.randbytes(PS)
    return bytes(out)


def step_data(k):
    """Memory of pid 1 at step k: sparse changes between steps, one range zeroed at step 2."""
    a = text(NA - 8, b"a") + bytes(4 * PS) + rand(4, 1)
    b = rand(NB, 2)
    for j in range(1, k + 1):
        a = mutate(a, [j, 50 + j, 120, 199 - j], seed=10 + j)
        b = mutate(b, [j * 3], seed=20 + j)
        if j == 2:
            a = a[:60 * PS] + bytes(10 * PS) + a[70 * PS:]
    return a, b


def full_dump(path, k, kind="off", new_range=False):
    a, b = step_data(k)
    maps = {1: [(A, NA, P, a), (B, NB, P, b), (C, 2, PE_LAZY, None)],
            2: [(A, 16, P, text(16, b"child%d" % k))]}
    if new_range:
        maps[1].insert(2, (B + NB * PS + 16 * PS, 5, P, rand(5, 99 + k)))
    return make_layer(path, maps, spec=spec(kind))


def keep_full(path, dst):
    shutil.copytree(path, dst, symlinks=True)
    return dst


def parent_pages(layer):
    return sum(e.nr_pages for pm in ImageSet(layer).pagemaps.values() for e in pm.entries
               if e.flags & PE_PARENT)


def build_chain(root, kinds, new_range=False):
    """Full dumps 1..n (each step), rebased bottom-up, layer i stored as kinds[i]."""
    fulls = []
    for i, kind in enumerate(kinds):
        d = full_dump(root / str(i + 1), i, "off", new_range=new_range and i > 0)
        fulls.append(keep_full(d, root / f"full{i + 1}"))
        if i == 0:
            if kind != "off":
                from zdtmpy.compress import compress_dir

                compress_dir(d, spec(kind), in_place=True)
            continue
        res = rebase_dir(d, root / str(i), spec(kind), in_place=True)
        assert res.changed and res.bytes_after < res.bytes_before, res.message
    return fulls


def check_chain(root, kinds, fulls):
    n = len(kinds)
    for i in range(n):
        layer = root / str(i + 1)
        assert verify_chain(layer) == [], verify_chain(layer)
        assert same_content(fulls[i], layer) == []
        inv = ImageSet(layer)
        want_v3 = any(k != "off" for k in kinds[:i + 1])
        assert inv.img_version == (3 if want_v3 else 2), (i, kinds)
        assert inv.compress == spec(kinds[i]).layout_id
        if i:
            assert os.readlink(layer / "parent") == f"../{i}"
            assert parent_pages(layer) > NA // 2  # most pages now live below


@pytest.mark.parametrize("kinds", [(a, b) for a in CHAIN_KINDS for b in CHAIN_KINDS]
                         + list(CHAIN_TRIPLES), ids="+".join)
def test_mixed_chain_reads_back_full_dumps(tmp_path, kinds):
    fulls = build_chain(tmp_path, kinds, new_range=True)
    check_chain(tmp_path, kinds, fulls)
    # the whole chain decompressed: every layer version 2, content unchanged
    top = tmp_path / str(len(kinds))
    decompress_dir(top, in_place=True, chain=True)
    for i in range(len(kinds)):
        layer = tmp_path / str(i + 1)
        assert ImageSet(layer).img_version == 2 and ImageSet(layer).compress == 0
        assert same_content(fulls[i], layer) == []
    assert verify_chain(top) == []


def test_entries_split_at_changes(tmp_path):
    full_dump(tmp_path / "1", 0)
    full_dump(tmp_path / "2", 1)
    rebase_dir(tmp_path / "2", tmp_path / "1", in_place=True)
    pm = ImageSet(tmp_path / "2").pagemaps[1]
    present = [(e.vaddr, e.nr_pages) for e in pm.entries if e.present and e.vaddr < B]
    # step 1 changes pages 1, 51, 120 and 198 of range A: exactly those stay present
    assert present == [(A + p * PS, 1) for p in (1, 51, 120, 198)]
    assert all(e.flags == P for e in pm.entries if e.present)
    lazy = [e for e in pm.entries if e.vaddr == C]
    assert lazy and lazy[0].flags == PE_LAZY  # non-present entries are kept as they are
    with PageReader(tmp_path / "2") as r:
        assert r.read(1, A, NA) == step_data(1)[0]


def test_default_keeps_representation_and_backups(tmp_path):
    full_dump(tmp_path / "1", 0, "page")
    full_dump(tmp_path / "2", 1, "region64k")
    full = keep_full(tmp_path / "2", tmp_path / "full")
    res = rebase_dir(tmp_path / "2", tmp_path / "1")
    assert "img_version 3" in res.message
    inv = ImageSet(tmp_path / "2")
    assert inv.compress == 2 and inv.compress_region_size == 64 * 1024
    assert (tmp_path / "2" / "pagemap-1.img.bak").exists()
    assert not (tmp_path / "2" / ".zdtmpy-stage").exists()
    assert same_content(full, tmp_path / "2") == []
    assert verify_dir(tmp_path / "2", chain=True) == []


def test_identical_dump_is_all_parent(tmp_path):
    full_dump(tmp_path / "1", 0)
    full_dump(tmp_path / "2", 0)
    res = rebase_dir(tmp_path / "2", tmp_path / "1", in_place=True)
    assert res.bytes_after == 0
    for pm in ImageSet(tmp_path / "2").pagemaps.values():
        assert all(not e.present for e in pm.entries)
        assert os.path.getsize(pm.pages_path) == 0


def test_parent_holes_and_lazy_pages_stay_present(tmp_path):
    """Pages the parent does not hold (no entry, or PE_LAZY only) cannot become PE_PARENT."""
    data = text(8, b"x")
    make_layer(tmp_path / "1", {1: [(A, 2, P, data[:2 * PS]), (A + 2 * PS, 2, PE_LAZY, None),
                                    (A + 6 * PS, 2, P, data[6 * PS:])]})
    make_layer(tmp_path / "2", {1: [(A, 8, P, data)]})
    rebase_dir(tmp_path / "2", tmp_path / "1", in_place=True)
    pm = ImageSet(tmp_path / "2").pagemaps[1]
    assert [(e.vaddr, e.nr_pages, e.flags) for e in pm.entries] == [
        (A, 2, PE_PARENT), (A + 2 * PS, 4, P), (A + 6 * PS, 2, PE_PARENT)]
    assert verify_chain(tmp_path / "2") == []


def test_large_layer_is_streamed_in_bounded_entries(tmp_path, monkeypatch):
    import zdtmpy.compress.rebase as rb

    monkeypatch.setattr(rb, "MAX_RUN_BYTES", 64 * PS)
    make_layer(tmp_path / "1", {1: [(A, 300, P, rand(300, 1))]})
    make_layer(tmp_path / "2", {1: [(A, 300, P, rand(300, 2))]})
    rebase_dir(tmp_path / "2", tmp_path / "1", spec("region64k"), in_place=True)
    pm = ImageSet(tmp_path / "2").pagemaps[1]
    assert max(e.nr_pages for e in pm.entries) <= 64 + 256  # a chunk is added at most once
    with PageReader(tmp_path / "2") as r:
        assert r.read(1, A, 300) == rand(300, 2)


def test_cli(tmp_path, capsys):
    full_dump(tmp_path / "1", 0)
    full_dump(tmp_path / "2", 1)
    assert main(["rebase", str(tmp_path / "2"), "--parent", str(tmp_path / "1"),
                 "--region", "64K", "--in-place"]) == 0
    out = capsys.readouterr().out
    assert "rebased onto ../1" in out and "pages unchanged" in out and "img_version 3" in out
    assert ImageSet(tmp_path / "2").compress == 2
    assert main(["rebase", str(tmp_path / "2"), "--parent", str(tmp_path / "1")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zdtmpy rebase: error: ") and "already has a parent link" in err
