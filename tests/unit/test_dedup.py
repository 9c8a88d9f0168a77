"""dedup_chain / `zdtmpy dedup`: parent layers keep exactly the pages the top reads from them,
for every layer format; the top still reads back as its full dump; refusals change nothing."""

import random
import shutil

import pytest

from zdtmpy.cli import main
from zdtmpy.compress import compress_dir
from zdtmpy.compress.chain import same_content, verify_chain
from zdtmpy.compress.dedup import dedup_chain
from zdtmpy.compress.rebase import rebase_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError
from zdtmpy.images import PE_LAZY, PE_PRESENT, ImageSet, PageReader
from zdtmpy.matrix import compression

PS = 4096
P = PE_PRESENT | PE_LAZY
A, B = 0x10000000, 0x20000000
NA, NB = 200, 40  # 200 pages: not a multiple of a 64K region


def text(n, tag):
    return b"".join((b"%s page %d: compressible words\n" % (tag, i) * 200)[:PS] for i in range(n))


def memory(step):
    """pid 1 at `step`: a few pages of A rewritten per step, B rewritten wholly at step 2."""
    a = bytearray(text(NA, b"a"))
    rng = random.Random(step)
    for s in range(1, step + 1):
        for p in (s, 40 + s, 100, NA - 1 - s, *range(16 * s, 16 * s + 16)):
            a[p * PS:(p + 1) * PS] = random.Random(s * 1000 + p).randbytes(PS)
    b = text(NB, b"b%d" % (step if step >= 2 else 0))
    return {1: [(A, NA, P, bytes(a)), (B, NB, P, b)],
            2: [(A, 8, P, rng.randbytes(8 * PS) if step == 0 else text(8, b"c"))]}


def build(root, kinds):
    """Full dumps at steps 0..n-1, rebased into a chain, layer i stored as kinds[i]."""
    fulls = []
    for i, kind in enumerate(kinds):
        d = make_layer(root / str(i + 1), memory(i))
        fulls.append(shutil.copytree(d, root / f"full{i + 1}", symlinks=True))
        if i == 0:
            if kind != "off":
                compress_dir(d, compression(kind), in_place=True)
        else:
            rebase_dir(d, root / str(i), compression(kind), in_place=True)
    return fulls


def served_by(top):
    """{layer dir: pages the top reads from it}, found by following the chain page by page."""
    out = {}
    with PageReader(top) as r:
        for key, pm in ImageSet(top).pagemaps.items():
            for e in pm.entries:
                for p in range(e.nr_pages):
                    where = r.locate(key, e.vaddr + p * PS).layer_dir
                    out[where] = out.get(where, 0) + 1
    return out


def stored(layer):
    return sum(e.nr_pages for pm in ImageSet(layer).pagemaps.values() for e in pm.entries
               if e.flags & PE_PRESENT)


LAYOUTS = [("off", "off", "off"), ("page", "page", "page"), ("region64k",) * 3,
           ("region4m",) * 3,
           ("region256k", "region64k", "off"), ("page", "region64k", "off"),
           ("off", "page"), ("region64k", "page")]


@pytest.mark.parametrize("kinds", LAYOUTS, ids="+".join)
def test_parents_keep_only_what_the_top_reads(tmp_path, kinds):
    fulls = build(tmp_path, kinds)
    top = tmp_path / str(len(kinds))
    before = {str(tmp_path / str(i + 1)): stored(tmp_path / str(i + 1))
              for i in range(len(kinds))}
    formats = [(ImageSet(tmp_path / str(i + 1)).compress,
                ImageSet(tmp_path / str(i + 1)).compress_region_size) for i in range(len(kinds))]
    wanted = served_by(top)
    res = dedup_chain(top, in_place=True)
    assert verify_chain(top) == [], verify_chain(top)
    assert same_content(fulls[-1], top) == []
    for i in range(len(kinds) - 1):
        layer = tmp_path / str(i + 1)
        assert stored(layer) == wanted.get(str(layer), 0) < before[str(layer)]
        assert (ImageSet(layer).compress, ImageSet(layer).compress_region_size) == formats[i]
    assert res.bytes_saved > 0 and "bytes saved" in res.message
    assert served_by(top) == wanted
    again = dedup_chain(top, in_place=True)  # idempotent: nothing left to drop
    assert all(x.pages_before == x.pages_after for x in again.layers)


def test_cli_keeps_backups_and_reports(tmp_path, capsys):
    build(tmp_path, ("page", "off"))
    assert main(["dedup", str(tmp_path / "2")]) == 0
    out = capsys.readouterr().out
    assert "stored pages dropped" in out and "bytes saved" in out
    assert list((tmp_path / "1").glob("pagemap-*.img.bak"))


def test_no_parent_is_a_no_op(tmp_path):
    d = make_layer(tmp_path / "1", memory(0))
    assert "nothing to deduplicate" in dedup_chain(d).message


def test_refused_layer_is_left_alone(tmp_path):
    build(tmp_path, ("off", "off"))
    inv = tmp_path / "1" / "inventory.img"
    data = bytearray(inv.read_bytes())
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "1").iterdir() if p.is_file()}
    # an unknown compression layout in the parent's inventory
    from zdtmpy.images import messages
    from zdtmpy.images.framing import INVENTORY_MAGIC, write_image

    msg = ImageSet(tmp_path / "1").inventory
    msg.compress = 9
    write_image(inv, INVENTORY_MAGIC, [msg])
    snapshot["inventory.img"] = inv.read_bytes()
    assert bytes(data) != snapshot["inventory.img"] and messages
    with pytest.raises(ImageError, match="refusing to dedup"):
        dedup_chain(tmp_path / "2", in_place=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "1").iterdir() if p.is_file()} \
        == snapshot


def test_dedup_cells_cover_every_parent_format():
    from pathlib import Path

    from zdtmpy import matrix
    from zdtmpy.descriptor import from_mapping

    d = from_mapping({}, Path("t.yaml"))
    cells = matrix.variants(d, ["dedup", "auto-dedup"], list(matrix.ALL_COMPRESSIONS),
                            apis=("cli", "rpc"))
    parents = {c.layers[0].name for c in cells if c.mode.name == "dedup"}
    assert parents == set(matrix.ALL_COMPRESSIONS)
    assert "auto-dedup-off-rpc" in [c.id for c in cells]  # criu_opts has auto_dedup
    assert not [c for c in cells if c.mode.name == "dedup" and c.api == "rpc"]


def test_broken_inputs_are_clear_errors(tmp_path, capsys):
    build(tmp_path, ("page", "region64k", "off"))
    layer2 = {p.name: p.read_bytes() for p in (tmp_path / "2").iterdir() if p.is_file()}
    pages = next((tmp_path / "1").glob("pages-*.img"))
    with open(pages, "r+b") as f:  # a parent whose pages file lost its tail
        f.truncate(pages.stat().st_size - 100)
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "1").iterdir() if p.is_file()}
    assert main(["dedup", str(tmp_path / "3")]) == 1
    err = capsys.readouterr().err
    assert "zdtmpy dedup: error:" in err and str(tmp_path / "1") in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "1").iterdir() if p.is_file()} \
        == snapshot
    # the grandparent's refusal came before the parent was touched
    assert {p.name: p.read_bytes() for p in (tmp_path / "2").iterdir() if p.is_file()} \
        == layer2
    (tmp_path / "2" / "parent").unlink()
    (tmp_path / "2" / "parent").symlink_to("../nowhere")
    assert main(["dedup", str(tmp_path / "2")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_dedup_mode_demands_drops_only_from_a_workload_that_changed_pages():
    """CRIU's own tests have no manifest: their parents may rightly keep every page."""
    from zdtmpy.cycle.dedup import _changed
    from zdtmpy.workload import Manifest, Region

    def region(seed):
        return Region(pid=1, start=0x10000, pages=4, gen="xorshift", seed=seed, index=0,
                      label="anon")

    upstream = [Manifest(step=i, regions=()) for i in range(3)]
    assert not _changed(upstream)
    assert _changed([Manifest(0, (region(1),)), Manifest(1, (region(2),))])
    assert not _changed([Manifest(0, (region(1),)), Manifest(1, (region(1),))])
