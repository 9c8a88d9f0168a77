"""The batch block decoder (lz4batch.c) against the pure-Python paths: the same pieces, the
same errors, and byte-identical files and reads whichever path runs (the fallbacks are
forced by switching the native paths off)."""

import os
import random
from pathlib import Path

import pytest

from zdtmpy.codec import Compression, coding, lz4batch, lz4native
from zdtmpy.compress import compress_dir, decompress_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError
from zdtmpy.images import PE_PRESENT, ImageSet, PageReader

PS = 4096
A = 0x7f0000000000


def text(n, tag=b"t"):
    return b"".join((b"%s page %d: compressible words here\n" % (tag, i) * 200)[:PS]
                    for i in range(n))


def rand(n, seed=1):
    return random.Random(seed).randbytes(n * PS)


def mixed(npages, seed=3):
    """Runs of zero, text, random and half-random pages."""
    rng = random.Random(seed)
    out, n = [], 0
    while n < npages:
        k = min(rng.randrange(1, 20), npages - n)
        kind = rng.randrange(4)
        if kind == 0:
            out.append(bytes(k * PS))
        elif kind == 1:
            out.append(text(k, b"m%d" % n))
        elif kind == 2:
            out.append(rand(k, n))
        else:
            out.append(b"".join(rand(1, n + i)[:PS // 2] + bytes(PS // 2) for i in range(k)))
        n += k
    return b"".join(out)


def batch():
    nat = lz4native.helper()
    if nat is None or nat.batch_decode is None:
        pytest.skip(f"lz4batch.c is not in use here ({lz4native.batch_problem()})")
    return nat


def merged(pieces):
    return lz4batch.merge_pieces(pieces)


@pytest.mark.parametrize("block", [PS, 4 * PS, 64 << 10, 256 << 10])
def test_batch_decoder_gives_the_pieces_of_decode_parts(block):
    nat = batch()
    data = mixed(300) + text(1)[:PS]   # the last block is short in region modes
    data = data[:len(data) - 1000]
    sizes, payload = coding.encode_chunk(data, block)
    want = merged(coding.decode_parts(payload, sizes, block, len(data)))
    out = bytearray(len(data))
    got = lz4batch.decode(nat, bytearray(payload), len(payload), sizes, block, len(data),
                              out)
    assert merged(got) == want
    # decode_into (the decompress path), decode_chunk and a zero-filled decode agree
    buf = bytearray(payload) + bytearray(100)
    assert merged(coding.decode_into(buf, len(payload), sizes, block, len(data),
                                    bytearray(len(data)))) == want
    assert coding.decode_chunk(payload, sizes, block, len(data)) == data
    assert coding.decode_chunk(memoryview(payload), sizes, block, len(data)) == data
    dirty = bytearray(b"\xaa") * (len(data) + 10)
    lz4batch.decode(nat, payload, len(payload), sizes, block, len(data), dirty, 5, True)
    assert dirty[5:5 + len(data)] == data and dirty[:5] == b"\xaa" * 5


def test_batch_decoder_all_zero_and_all_raw():
    nat = batch()
    for data in (bytes(64 * PS), rand(64)):
        sizes, payload = coding.encode_chunk(data, PS)
        got = lz4batch.decode(nat, bytearray(payload), len(payload), sizes, PS,
                                  len(data), bytearray(len(data)))
        assert merged(got) == merged(coding.decode_parts(payload, sizes, PS, len(data)))
        assert len(got) == 1


@pytest.mark.parametrize("damage", ["garbage", "short", "too_large"])
def test_bad_blocks_give_the_python_errors(damage, monkeypatch):
    batch()
    data = text(8) + rand(4) + text(8, b"u")
    sizes, payload = coding.encode_chunk(data, PS)
    payload = bytearray(payload)
    if damage == "garbage":
        at = sum(sizes[:13])   # block 13 is an LZ4 one (text), placed after raw ones
        assert 0 < sizes[13] < PS
        payload[at:at + sizes[13]] = b"\xff" * sizes[13]
    elif damage == "short":
        payload = payload[:-1]
    else:
        sizes[3] = PS + 1
    errors = []
    for off in (False, True):
        if off:
            monkeypatch.setattr(lz4native.HELPER, "native", False)
        with pytest.raises(ImageError) as exc:
            coding.decode_into(payload, len(payload), sizes, PS, len(data),
                              bytearray(len(data)), 100)
        errors.append(str(exc.value))
        with pytest.raises(ImageError):
            coding.decode_chunk(bytes(payload), sizes, PS, len(data))
    assert errors[0] == errors[1]
    assert "block 1" in errors[0]


# -- whole paths, native and forced fallbacks ------------------------------------------------

def files(d):
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}


def layer(path):
    entries = [(A, 700, PE_PRESENT, mixed(700)),
               (A + 701 * PS, 3, PE_PRESENT, text(3)),
               (A + 705 * PS, 64, PE_PRESENT, rand(64, 9)),
               (A + 800 * PS, 40, PE_PRESENT, bytes(40 * PS))]
    return make_layer(path, {1: entries}), entries


def roundtrip(root, spec):
    """compress then decompress a fresh layer: (compressed files, decompressed files,
    reads of the compressed layer)."""
    d, entries = layer(root)
    compress_dir(d, spec, in_place=True)
    comp = files(d)
    reads = []
    with PageReader(d) as r:
        for vaddr, n, _, data in entries:
            got = r.read(1, vaddr, n)
            assert got == data
            reads.append(got)
            for first, count in ((0, 1), (5, 17), (n - 3, 3), (1, n - 2)):
                if 0 <= first and count > 0 and first + count <= n:
                    got = r.read(1, vaddr + first * PS, count)
                    assert got == data[first * PS:(first + count) * PS]
                    reads.append(got)
    decompress_dir(d, in_place=True)
    assert ImageSet(d).pagemaps[1].entries[0].compressed is False
    with open(d / "pages-1.img", "rb") as f:
        assert f.read() == b"".join(e[3] for e in entries)
    return comp, files(d), reads


@pytest.mark.parametrize("spec", [Compression("page"),
                                  Compression("region", 8 * PS),
                                  Compression("region", 256 << 10)],
                         ids=["page", "region32k", "region256k"])
def test_native_and_fallback_paths_write_and_read_the_same(tmp_path, monkeypatch, spec):
    results = [roundtrip(tmp_path / "native", spec)]
    nat = lz4native.helper()
    if nat is not None:
        # the per-block ctypes loops (no lz4batch.c)
        monkeypatch.setattr(nat, "batch", None)
        monkeypatch.setattr(nat, "batch_decode", None)
        results.append(roundtrip(tmp_path / "ctypes", spec))
        monkeypatch.undo()
    # no native path at all: lz4.block only
    monkeypatch.setattr(lz4native.HELPER, "native", False)
    assert lz4native.helper() is None
    results.append(roundtrip(tmp_path / "python", spec))
    for other in results[1:]:
        assert other == results[0]


def test_reader_reports_a_bad_block_inside_a_long_read(tmp_path):
    data = text(40)
    make_layer(tmp_path, {1: [(A, 40, PE_PRESENT, data)]}, spec=Compression("page"))
    e = ImageSet(tmp_path).pagemaps[1].entries[0]
    pages = tmp_path / "pages-1.img"
    blob = bytearray(pages.read_bytes())
    start = e.offset + e.block_offsets[20]
    blob[start:start + e.sizes[20]] = b"\xff" * e.sizes[20]
    pages.write_bytes(bytes(blob))
    with PageReader(tmp_path) as r:
        assert r.read(1, A, 20) == data[:20 * PS]
        assert r.read(1, A + 21 * PS, 19) == data[21 * PS:]
        for first, count in ((0, 40), (10, 15), (20, 1)):
            with pytest.raises(ImageError, match=r"entry 0 block 20: LZ4 block"):
                r.read(1, A + first * PS, count)


def test_decompressed_zero_blocks_are_holes(tmp_path):
    d, entries = layer(tmp_path / "d")
    compress_dir(d, Compression("page"), in_place=True)
    decompress_dir(d, in_place=True)
    st = os.stat(d / "pages-1.img")
    assert st.st_blocks * 512 < st.st_size   # zero runs were not written


def test_zero_pages_inside_region_blocks_are_zero_runs_and_holes(tmp_path):
    """A region block mixing zero and data pages decodes to pieces whose zero pages are
    ints, and decompressing leaves them as holes (a zero page costs no write)."""
    nat = batch()
    region = 16 * PS
    data = b"".join(text(1, b"r%d" % i) if i % 4 == 0 else bytes(PS) for i in range(64))
    sizes, payload = coding.encode_chunk(data, region)
    assert all(0 < s < region for s in sizes)   # every block is an LZ4 one
    got = lz4batch.decode(nat, bytearray(payload), len(payload), sizes, region, len(data),
                          bytearray(len(data)))
    assert b"".join(bytes(p) for p in got) == data   # bytes(int): that many zeros
    assert [p for p in got if isinstance(p, int)] == [3 * PS] * 16
    d = tmp_path / "d"
    make_layer(d, {1: [(A, 64, PE_PRESENT, data)]}, spec=Compression("region", region))
    decompress_dir(d, in_place=True)
    pages = d / "pages-1.img"
    assert pages.read_bytes() == data
    assert os.stat(pages).st_blocks * 512 <= 16 * PS + 64 * 1024   # the data pages only


def test_without_a_c_compiler_the_ctypes_loop_decodes(tmp_path):
    """No compiler (CC points nowhere, empty build cache): lz4batch.c is not built, the
    codec says why, and decoding still gives the same bytes."""
    import subprocess
    import sys

    code = (
        "from zdtmpy.codec import coding, lz4native\n"
        "nat = lz4native.helper()\n"
        "assert nat is None or nat.batch_decode is None, 'built without a compiler?'\n"
        "assert nat is None or lz4native.batch_problem(), 'no reason given'\n"
        "import random\n"
        "rng = random.Random(5)\n"
        "data = b''.join(bytes(4096) if i % 3 == 0 else rng.randbytes(4096) if i % 3 == 1\n"
        "                else (b'word %d ' % i * 600)[:4096] for i in range(50))\n"
        "sizes, payload = coding.encode_chunk(data, 4096)\n"
        "assert coding.decode_chunk(payload, sizes, 4096, len(data)) == data\n"
        "pieces = coding.decode_into(bytearray(payload), len(payload), sizes, 4096,\n"
        "                           len(data), bytearray(len(data)))\n"
        "assert b''.join(bytes(p) for p in pieces) == data   # ints: zero runs\n"
    )
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), ZDTMPY_CACHE=str(tmp_path / "c"))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr


def test_an_all_zero_chunk_decodes_without_the_native_helper(monkeypatch):
    """Nothing to decode: a zero run, without loading (and self-testing) the native code."""
    monkeypatch.setattr(lz4native.HELPER, "native", None)   # not tried yet
    out = bytearray(8 * PS)
    assert coding.decode_into(b"", 0, [0] * 8, PS, 8 * PS - 100, out) == [8 * PS - 100]
    assert coding.decode_into(bytearray(), 0, [0] * 2, 64 << 10, 4 * PS, out) == [4 * PS]
    assert lz4native.HELPER.native is None


def test_pieces_of_raw_blocks_are_views_into_the_stored_bytes():
    """decode_into leaves raw blocks where they are: their pieces point into the stored
    bytes (no copy through `out`), the bytes are the same, and their zero pages are still
    zero runs; a filling decode copies them into `out`."""
    nat = batch()
    raw = rand(16, 4)
    raw = raw[:3 * PS] + bytes(PS) + raw[4 * PS:]   # a zero page inside a raw block
    data = text(8) + raw + bytes(8 * PS) + rand(8, 5)
    block = 8 * PS
    sizes, payload = coding.encode_chunk(data, block)
    assert sizes[1] == sizes[2] == sizes[4] == block and sizes[3] == 0 and sizes[0] < block
    src = bytearray(payload)
    out = bytearray(len(data))
    pieces = coding.decode_into(src, len(src), sizes, block, len(data), out)
    assert merged(pieces) == data
    views = [p for p in pieces if isinstance(p, memoryview)]
    assert views[0].obj is out   # text: decoded
    assert len(views) == 4 and all(p.obj is src for p in views[1:])   # raw: in place
    assert [p for p in pieces if isinstance(p, int)] == [PS, 8 * PS]
    assert bytes(out[block:3 * block]) == bytes(2 * block)   # nothing copied there
    filled = bytearray(len(data))
    got = lz4batch.decode(nat, src, len(src), sizes, block, len(data), filled)
    assert merged(got) == data and all(p.obj is filled for p in got
                                       if isinstance(p, memoryview))


@pytest.mark.parametrize("at", [0, 7, 8, 9, 2047, PS - 9, PS - 8, PS - 1])
def test_one_nonzero_byte_is_data_to_the_batch_coder(at):
    """The C zero test (head, then each byte against the one 8 before) misses no byte."""
    nat = batch()
    page = bytearray(PS)
    page[at] = 1
    data = bytes(PS) + bytes(page) + bytes(PS)
    sizes, parts = lz4batch.encode(nat, bytearray(data), len(data), bytearray(4 * PS), PS, 1)
    assert sizes[0] == sizes[2] == 0 and sizes[1] > 0
    stored = b"".join(parts)
    pieces = lz4batch.decode(nat, stored, len(stored), sizes, PS, len(data),
                             bytearray(len(data)), fill=False)
    assert merged(pieces) == data and [p for p in pieces if isinstance(p, int)] == [PS, PS]


@pytest.mark.parametrize("native", [True, False], ids=["native", "memcmp"])
def test_all_zero_sees_every_byte_and_only_the_first_n(native, monkeypatch):
    """The chunk zero test the writer's feed() runs before handing a chunk to a worker."""
    codec = coding.LZ4_CODEC
    if native:
        batch()
    else:
        monkeypatch.setattr(lz4native.HELPER, "native", False)
    n = 3 * PS + 100
    assert codec.all_zero(bytearray(n), n)
    for at in (0, 7, 8, PS, n - 9, n - 1):
        buf = bytearray(n + 50)
        buf[at] = 0x80
        assert not codec.all_zero(buf, n), at
    tail = bytearray(n + 50)
    tail[n] = 1                       # past the n bytes asked: not looked at
    assert codec.all_zero(tail, n) and codec.all_zero(tail, 0)
    with pytest.raises(ValueError):   # more than the buffer holds: refused, not guessed
        codec.all_zero(bytearray(10), 11)


_COUNT_SELF_TESTS = (
    "import sys\n"
    "from zdtmpy.codec import lz4batch, lz4native\n"
    "ran = []\n"
    "for mod in (lz4native, lz4batch):\n"
    "    def counted(nat, _orig=mod.self_test, _name=mod.__name__):\n"
    "        ran.append(_name)\n"
    "        return _orig(nat)\n"
    "    mod.self_test = counted\n"
    "nat = lz4native.helper()\n"
    "assert nat and nat.batch is not None, lz4native.batch_problem()\n"
    "print(len(ran), nat.batch_marker, 'zdtmpy.build' in sys.modules)\n"
)


def test_a_passed_self_test_is_remembered_for_these_binaries(tmp_path):
    """The first process builds the library, self-tests (binding and batch coder) and leaves
    a marker next to it; the next one finds both, skips the tests and does not even import
    the builder (zdtmpy.build: ~10 ms of every compress); without the marker they run
    again."""
    import subprocess
    import sys

    batch()   # no compiler here: nothing to remember
    env = dict(os.environ, ZDTMPY_CACHE=str(tmp_path / "c"))

    def run() -> tuple[int, Path, str]:
        res = subprocess.run([sys.executable, "-c", _COUNT_SELF_TESTS], env=env,
                             capture_output=True, text=True, timeout=300,
                             cwd=Path(__file__).resolve().parents[2])
        assert res.returncode == 0, res.stderr
        count, marker, builder = res.stdout.split()
        return int(count), Path(marker), builder

    count, marker, builder = run()
    assert count == 2 and marker.exists() and marker.parent.parent.parent == tmp_path / "c"
    assert builder == "True"   # it built the library
    assert run() == (0, marker, "False")
    marker.unlink()
    assert run() == (2, marker, "False") and marker.exists()


def test_a_failed_batch_self_test_leaves_no_marker(tmp_path, monkeypatch):
    batch()
    marker = tmp_path / "selftest-passed-x"
    monkeypatch.setattr(lz4batch, "passed_marker", lambda lib: marker)
    monkeypatch.setattr(lz4batch, "self_test", lambda nat: False)
    nat = lz4native._load()
    assert nat and nat.batch is None and nat.batch_marker is None
    assert nat.batch_problem == "its output differs from lz4.block's"
    assert not marker.exists()
