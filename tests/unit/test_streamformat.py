"""The image streamer without criu: the stream format, and capture / serve driven by a fake
criu over real UNIX sockets, pipes and SCM_RIGHTS."""

import os
import random
import socket
import stat
import struct
import threading
import zlib

import pytest

from zdtmpy.compress import Compression, verify_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError, StageTimeout
from zdtmpy.images import PE_LAZY, PE_PARENT, PE_PRESENT, ImageSet, PageReader
from zdtmpy.transport import streamextract as sx
from zdtmpy.transport import streamformat as sf
from zdtmpy.transport import streamindex as si
from zdtmpy.transport.capture import Capture
from zdtmpy.transport.serve import Serve
from zdtmpy.transport.streamproto import CAPTURE_SOCKET, StreamerError

PS = 4096
U32 = struct.Struct("<I")


def text(n, seed=0):
    return b"".join((b"page %d: compressible text\n" % (seed + i) * 200)[:PS] for i in range(n))


def rand(n, seed=1):
    return random.Random(seed).randbytes(n * PS)


def mixed(n):
    """text, random, zero, half pages in turn: every block kind."""
    out = []
    for i in range(n):
        kind = i % 4
        out.append(text(1, i) if kind == 0 else rand(1, i) if kind == 1 else bytes(PS)
                   if kind == 2 else rand(1, i)[:PS // 2] + bytes(PS // 2))
    return b"".join(out)


@pytest.fixture
def dump_dir(tmp_path):
    """A plain image layer as criu would stream it (inventory, pstree, two pagemaps)."""
    return make_layer(tmp_path / "src", {
        1: [(0x100000, 3, PE_PRESENT, text(3)),
            (0x200000, 2, PE_LAZY, b""),
            (0x300000, 70, PE_PRESENT, mixed(70)),
            (0x400000, 1, PE_PARENT, b"")],
        ("shmem", 9): [(0x0, 5, PE_PRESENT, rand(5, 7))],
    })


def files_of(d):
    order = ["pagemap-1.img", "pages-1.img", "pagemap-shmem-9.img", "pages-2.img",
             "pstree.img", "inventory.img"]
    return [(n, (d / n).read_bytes()) for n in order]


# -- a fake criu -------------------------------------------------------------------------------

def request(conn, name):
    body = b"\x0a" + bytes([len(name)]) + name.encode()
    conn.sendall(U32.pack(len(body)) + body)


def send_fd(conn, fd):
    conn.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])


def fake_dump(sock_path, files, *, pages_first=True, chunk=10000, cut=None):
    """Open every file like criu (request + read end of a pipe), then write them
    interleaved; `cut=(name, nbytes)`: stop that file after nbytes and vanish."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(sock_path))
    pipes = {}
    for name, _ in files:
        r, w = os.pipe()
        request(conn, name)
        send_fd(conn, r)
        os.close(r)
        pipes[name] = w
    data = dict(files)
    if cut:
        data[cut[0]] = data[cut[0]][:cut[1]]
    order = sorted(data, key=lambda n: (not n.startswith("pages-")) if pages_first else 0)
    pos = dict.fromkeys(data, 0)
    try:
        while any(pos[n] < len(data[n]) for n in order):
            for n in order:
                piece = data[n][pos[n]:pos[n] + chunk]
                if piece:
                    os.write(pipes[n], piece)  # blocking: the streamer must drain every pipe
                    pos[n] += len(piece)
                if cut and n == cut[0] and pos[n] >= cut[1]:
                    raise ConnectionAbortedError  # criu dies mid-file
    except ConnectionAbortedError:
        pass
    finally:
        for w in pipes.values():
            os.close(w)
        conn.close()


def fake_restore(sock_path, names):
    """Ask for each name like criu restore; returns {name: bytes or None (absent)}."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(sock_path))
    out = {}
    for name in names:
        request(conn, name)
        (n,) = U32.unpack(conn.recv(4, socket.MSG_WAITALL))
        reply = conn.recv(n, socket.MSG_WAITALL)
        if reply != b"\x08\x01":
            out[name] = None
            continue
        r, w = os.pipe()
        send_fd(conn, w)
        os.close(w)
        chunks = []
        while piece := os.read(r, 1 << 16):
            chunks.append(piece)
        os.close(r)
        out[name] = b"".join(chunks)
    conn.close()
    return out


class Background:
    def __init__(self, fn):
        self.result = self.error = None
        self.t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.t.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as exc:  # handed to the test thread
            self.error = exc

    def join(self):
        self.t.join(30)
        assert not self.t.is_alive()
        if self.error:
            raise self.error
        return self.result


def capture(tmp_path, files, spec, **kw):
    img = tmp_path / "img"
    img.mkdir(exist_ok=True)
    out = tmp_path / "s.zstream"
    cap = Capture(img, out, spec, accept_timeout=10, idle_timeout=10)
    sock = cap.listen()
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    bg = Background(cap.run)
    fake_dump(sock, files, **kw)
    return bg, out


SPECS = [Compression("off"), Compression("page"),
         Compression("region", region_size=64 << 10),
         Compression("region", region_size=8 << 10)]


# -- capture / extract / serve round trips ---------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}")
@pytest.mark.parametrize("pages_first", [True, False])
def test_capture_extract_serve_roundtrip(tmp_path, dump_dir, spec, pages_first):
    files = files_of(dump_dir)
    bg, out = capture(tmp_path, files, spec, pages_first=pages_first)
    res = bg.join()
    assert res.files == len(files) and res.pages_in == 3 + 70 + 5
    assert not (tmp_path / "img" / CAPTURE_SOCKET).exists()

    ext = tmp_path / "ext"
    with open(out, "rb") as f:
        sx.extract(f, ext, str(out))
    assert verify_dir(ext) == []
    iset = ImageSet(ext)
    assert iset.compress == {"off": 0, "page": 1, "region": 2}[spec.layout]
    with PageReader(ext) as rd:
        assert rd.read(1, 0x300000, 70) == mixed(70)
        assert rd.read(1, 0x100000, 3) == text(3)

    plain = tmp_path / "plain"
    with open(out, "rb") as f:
        sx.extract(f, plain, str(out), decompress=True)
    for name, data in files:
        if name.startswith("pages-"):
            assert (plain / name).read_bytes() == data

    rst = tmp_path / "rst"
    rst.mkdir()
    srv = Serve(rst, out, accept_timeout=10, idle_timeout=10)
    sock = srv.listen()
    bg = Background(srv.run)
    got = fake_restore(sock, [n for n, _ in files])
    bg.join()
    for name, data in files:  # criu gets exactly its own dump back
        assert got[name] == data, name
    assert os.listdir(rst) == []


def test_request_for_a_missing_file_is_answered_no(tmp_path, dump_dir):
    bg, out = capture(tmp_path, files_of(dump_dir), Compression("page"))
    bg.join()
    (tmp_path / "rst").mkdir()
    srv = Serve(tmp_path / "rst", out, accept_timeout=10, idle_timeout=10)
    sock = srv.listen()
    bg = Background(srv.run)
    got = fake_restore(sock, ["memfd.img", "inventory.img"])
    bg.join()
    assert got["memfd.img"] is None
    assert got["inventory.img"].startswith(struct.pack("<I", 0x58313116))


# -- failures ----------------------------------------------------------------------------------

def test_criu_vanishing_mid_file_is_an_error_and_leaves_nothing(tmp_path, dump_dir):
    files = files_of(dump_dir)
    bg, out = capture(tmp_path, files, Compression("off"), cut=("pstree.img", 15))
    with pytest.raises(StreamerError, match=r"pstree.img: criu closed the pipe inside entry"):
        bg.join()
    assert not out.exists()
    assert sorted(os.listdir(tmp_path / "img")) == []


def test_pages_cut_short_is_an_error(tmp_path, dump_dir):
    bg, out = capture(tmp_path, files_of(dump_dir), Compression("page"),
                      cut=("pages-2.img", 20 * PS))  # make_layer: pid 1 -> pages-2
    with pytest.raises(StreamerError, match=r"pages-2.img: 81920 bytes, 217088 bytes short "
                                            r"of the 73 pages pagemap-1.img describes"):
        bg.join()
    assert not out.exists()


def test_dump_without_inventory_is_incomplete(tmp_path, dump_dir):
    files = [f for f in files_of(dump_dir) if f[0] != "inventory.img"]
    bg, out = capture(tmp_path, files, Compression("off"))
    with pytest.raises(StreamerError, match="no inventory.img"):
        bg.join()
    assert not out.exists()


@pytest.mark.parametrize("name", ["../evil.img", "a/b.img", "..", ".", "", "x\n.img",
                                  ".hidden.part"])
def test_bad_names_are_refused(name):
    with pytest.raises(sf.StreamError, match="image file name"):
        sf.check_name(name)


def test_capture_refuses_a_path_from_criu(tmp_path, dump_dir):
    files = [("../escape.img", b"x" * 10), *files_of(dump_dir)]
    with pytest.raises((StreamerError, sf.StreamError, ConnectionError, OSError)):
        bg, out = capture(tmp_path, files, Compression("off"))
        bg.join()
    assert not (tmp_path / "escape.img").exists()
    assert not (tmp_path / "s.zstream").exists()


def test_capture_times_out_without_criu(tmp_path):
    cap = Capture(tmp_path, tmp_path / "s", accept_timeout=0.2)
    with pytest.raises(StageTimeout, match="did not connect"):
        cap.run()
    assert os.listdir(tmp_path) == []


# -- the stream format -------------------------------------------------------------------------

def small_stream(tmp_path):
    with open(tmp_path / "s", "wb") as f:
        w = sf.StreamWriter(f, chunk=100)
        a = w.open("a.img")
        b = w.open("b.img")
        w.write(a, b"A" * 250)
        w.write(b, b"B" * 10)
        w.write(a, b"a" * 5)
        w.close(b)
        w.close(a)
        w.end()
    return (tmp_path / "s").read_bytes()


def test_interleaved_files_extract(tmp_path):
    small_stream(tmp_path)
    with open(tmp_path / "s", "rb") as f:
        res = sx.extract(f, tmp_path / "out", "s")
    assert res.files == {"a.img": 255, "b.img": 10}
    assert (tmp_path / "out" / "a.img").read_bytes() == b"A" * 250 + b"a" * 5


@pytest.mark.parametrize("cut", [5, 21, 40, 300, -5, -24])
def test_truncated_stream_is_refused_and_extract_leaves_nothing(tmp_path, cut):
    data = small_stream(tmp_path)
    (tmp_path / "t").write_bytes(data[:cut])
    with open(tmp_path / "t", "rb") as f, pytest.raises(sf.StreamError, match="truncated"):
        sx.extract(f, tmp_path / "out", "t")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    with pytest.raises(sf.StreamError, match="truncated"):
        si.index_stream(tmp_path / "t")


def test_corrupted_byte_is_a_checksum_error(tmp_path):
    data = bytearray(small_stream(tmp_path))
    first_data = sf.HEADER_SIZE + 2 * (sf.REC_OVERHEAD + 5)  # after the two OPEN records
    data[first_data + 20 + 50] ^= 1  # inside a.img's first data payload
    (tmp_path / "t").write_bytes(data)
    with open(tmp_path / "t", "rb") as f, pytest.raises(sf.StreamError,
                                                         match="checksum mismatch.*a.img"):
        sx.extract(f, tmp_path / "out", "t")
    with pytest.raises(sf.StreamError, match="checksum mismatch"):
        si.index_stream(tmp_path / "t")


def test_missing_record_is_detected(tmp_path):
    data = small_stream(tmp_path)
    start = sf.HEADER_SIZE + 2 * (sf.REC_OVERHEAD + 5)   # after the two OPEN records
    (tmp_path / "t").write_bytes(data[:start] + data[start + sf.REC_OVERHEAD + 100:])
    with open(tmp_path / "t", "rb") as f, pytest.raises(sf.StreamError,
                                                         match="a record is missing"):
        sx.extract(f, tmp_path / "out", "t")


def test_corrupted_page_block_with_valid_checksum_fails_serve(tmp_path, dump_dir):
    """A capture bug or a forged stream: the record checks pass, the LZ4 block does not.
    serve decodes each record before writing any of it: the feed of that file fails naming
    the file, offset and block, criu gets none of the bad record (a short file, which
    fails its restore) and never wrong pages; the other files are served whole."""
    files = files_of(dump_dir)
    bg, out = capture(tmp_path, files, Compression("page"))
    bg.join()
    data = bytearray(out.read_bytes())
    idx = si.index_stream(out)
    pos = idx.files["pages-2.img"].chunks[0]  # pid 1's pages (make_layer order)
    body = pos + 20
    (length,) = struct.unpack_from("<I", data, pos + 16)
    nblocks = struct.unpack_from("<I", data, body + 4)[0]
    first = body + 16 + 4 * nblocks                 # the first block: LZ4 (text)
    data[first + 10:first + 40] = b"\xff" * 30
    data[body + length:body + length + 4] = U32.pack(zlib.crc32(bytes(data[body:body + length]),
                                                               zlib.crc32(bytes(data[pos:body]))))
    out.write_bytes(data)
    (tmp_path / "rst").mkdir()
    srv = Serve(tmp_path / "rst", out, accept_timeout=10, idle_timeout=10)
    sock = srv.listen()
    bg = Background(srv.run)
    got = fake_restore(sock, ["inventory.img", "pages-2.img", "pagemap-1.img"])
    with pytest.raises(StreamerError, match=r"pages-2.img: .*pages-2.img at file offset 0: "
                                            r"block 0: LZ4"):
        bg.join()
    assert got["pages-2.img"] == b""              # nothing of the bad record
    whole = dict(files)
    assert got["inventory.img"] == whole["inventory.img"]
    assert got["pagemap-1.img"] == whole["pagemap-1.img"]
    assert os.listdir(tmp_path / "rst") == []


def test_a_stream_cut_after_serve_checked_it_fails_the_file_not_silently(tmp_path, dump_dir):
    """The stream file changes under serve (cut after the check): the file being fed fails
    with the stream and file named, criu gets a short file, and serve ends (no hang)."""
    bg, out = capture(tmp_path, files_of(dump_dir), Compression("page"))
    bg.join()
    (tmp_path / "rst").mkdir()
    srv = Serve(tmp_path / "rst", out, accept_timeout=10, idle_timeout=10)
    sock = srv.listen()
    pos = srv.index.files["pages-2.img"].chunks[0]
    os.truncate(out, pos + 30)                    # inside the record's payload
    bg = Background(srv.run)
    got = fake_restore(sock, ["pages-2.img"])
    with pytest.raises(StreamerError, match=r"pages-2.img: .*s.zstream: pages-2.img: "
                                            r"truncated data record at byte"):
        bg.join()
    assert got["pages-2.img"] == b""
    assert os.listdir(tmp_path / "rst") == []


def test_serve_refuses_a_truncated_stream_before_listening(tmp_path, dump_dir):
    bg, out = capture(tmp_path, files_of(dump_dir), Compression("page"))
    bg.join()
    out.write_bytes(out.read_bytes()[:-10])
    (tmp_path / "rst").mkdir()
    with pytest.raises(sf.StreamError, match="truncated"):
        Serve(tmp_path / "rst", out).listen()
    assert os.listdir(tmp_path / "rst") == []


def test_header_checks(tmp_path):
    with pytest.raises(sf.StreamError, match="not a zdtmpy stream"):
        sf.decode_header(b"X" * 20, "s")
    good = sf.encode_header(Compression("page"))
    with pytest.raises(sf.StreamError, match="header checksum"):
        sf.decode_header(good[:9] + b"\x09" + good[10:], "s")
    assert isinstance(ImageError("x"), Exception)


def test_a_blocks_record_built_in_a_pool_thread_is_the_writers_own(tmp_path):
    """capture builds its BLOCKS records (CRC included) in the pool: the bytes must be
    exactly StreamWriter.blocks's, and out-of-order records are refused."""
    import io

    from zdtmpy.codec.coding import encode_chunk

    data = b"text " * 1000 + bytes(8192) + os.urandom(4096)
    data += bytes(-len(data) % PS)
    sizes, payload = encode_chunk(data, PS, 1)
    a, b = io.BytesIO(), io.BytesIO()
    wa, wb = sf.StreamWriter(a, Compression("page")), sf.StreamWriter(b, Compression("page"))
    fa, fb = wa.open("pages-1.img"), wb.open("pages-1.img")
    wa.blocks(fa, PS, len(data), sizes, payload)
    wb.put_blocks(fb, 0, len(data), sf.blocks_record(fb, 0, PS, len(data), sizes, payload))
    assert a.getvalue() == b.getvalue()
    with pytest.raises(sf.StreamError, match="out of order"):
        wb.put_blocks(fb, 0, len(data), sf.blocks_record(fb, 0, PS, len(data), sizes,
                                                         payload))
    for w, f in ((wa, fa), (wb, fb)):
        w.close(f)
        w.end()
    assert a.getvalue() == b.getvalue()
    (tmp_path / "s").write_bytes(b.getvalue())
    idx = si.index_stream(tmp_path / "s")   # every CRC checked
    assert idx.files["pages-1.img"].size == len(data)


def test_the_stream_crc_is_zlibs_crc32():
    """The checksum in use (zlib-ng's where installed) gives zlib's values: streams written
    with either read back with the other."""
    import os
    import zlib

    from zdtmpy.transport.crc import crc32

    for n in (0, 1, 7, 4096, 65537, 1 << 20):
        data = os.urandom(n)
        assert crc32(data) == zlib.crc32(data)
        assert crc32(memoryview(bytearray(data)), 0x1234567) == zlib.crc32(data, 0x1234567)
