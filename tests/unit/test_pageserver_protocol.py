"""zdtmpy's page server over real sockets: good sessions in both header layouts and every
compression mode, lazy GET, and malformed streams that must end in a clean error with
nothing installed and the server still serving the next session."""

import os
import random
import socket
import struct
import time

import lz4.block
import pytest

from zdtmpy.codec import Compression
from zdtmpy.compress import verify_dir
from zdtmpy.compress.synth import make_layer
from zdtmpy.images import PE_LAZY, PE_PARENT, PE_PRESENT, Pagemap, PageReader
from zdtmpy.transport import pageserver as ps

PS = 4096
PID = 42
DST = ps.encode_dst(PID)
A = 0x7F0000000000


def text(n, tag=b"x"):
    return b"".join((b"%s page %d: compressible words here\n" % (tag, i) * 200)[:PS]
                    for i in range(n))


def rand(n, seed=1):
    return random.Random(seed).randbytes(n * PS)


class Client:
    def __init__(self, port, header_size):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.layout = ps.HeaderLayout(header_size)

    def send(self, command, flags=0, nr=0, vaddr=0, dst=DST, payload=b""):
        self.sock.sendall(self.layout.pack(command, flags, nr, vaddr, dst) + payload)

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def open2(self, dst=DST):
        self.send(ps.OPEN2, dst=dst)
        return self.recv(1)

    def close(self, command=ps.CLOSE):
        self.send(command, dst=0)
        status = self.recv(4)
        self.sock.close()
        return status

    def drop(self):
        self.sock.close()


@pytest.fixture(params=[24, 32], ids=["hdr24", "hdr32"])
def header_size(request):
    return request.param


@pytest.fixture
def server(tmp_path, header_size):
    images = tmp_path / "img"
    images.mkdir()
    srv = ps.PageServer(images, header_size=header_size, timeout=0.5,
                        log_path=tmp_path / "ps.log", spec=Compression("page"))
    srv.start()
    yield srv
    srv.stop()
    # no thread, no socket, no staging directory left behind
    assert not srv._thread.is_alive()
    assert not [n for n in os.listdir(images) if n.startswith(".")]


def good_session(srv, header_size, data=None):
    data = data if data is not None else text(3) + rand(2)
    c = Client(srv.port, header_size)
    assert c.open2() == b"\0"
    c.send(ps.ADD_F, PE_PRESENT | PE_LAZY, 5, A, payload=data)
    c.send(ps.ADD_F, PE_LAZY, 2, A + 0x10000)
    assert c.close() == struct.pack("=i", 0)
    return data


def installed(srv):
    return sorted(n for n in os.listdir(srv.images_dir) if n.startswith(("pagemap", "pages")))


# -- good sessions -----------------------------------------------------------------------

@pytest.mark.parametrize("spec", [Compression("off"), Compression("page"),
                                  Compression("region", 16 * PS)],
                         ids=["off", "page", "region64k"])
def test_dump_session_writes_pages_in_the_asked_mode(tmp_path, header_size, spec):
    images = tmp_path / "img"
    images.mkdir()
    make_layer(images, {}, pids=[PID])  # inventory + pstree, as criu dump would write
    with ps.PageServer(images, header_size=header_size, spec=spec, timeout=2) as srv:
        data = good_session(srv, header_size)
        result = srv.wait(5)
    assert result.files == [(f"pagemap-{PID}.img", "pages-65537.img")]
    ps.stamp_inventory(images, spec)
    assert verify_dir(images) == []
    pm = Pagemap.load(images / f"pagemap-{PID}.img")
    assert pm.pages_id == 65537
    assert [(e.vaddr, e.nr_pages, e.flags & ~8) for e in pm.entries] == \
        [(A, 5, PE_PRESENT | PE_LAZY), (A + 0x10000, 2, PE_LAZY)]
    assert pm.entries[0].compressed == (spec.enabled)
    assert pm.entries[0].msg.HasField("nr_pages") == (header_size == 32)
    with PageReader(images) as r:
        assert r.read(PID, A, 5) == data


def test_shmem_parent_hole_and_legacy_commands(tmp_path, header_size):
    images = tmp_path / "img"
    (tmp_path / "parent").mkdir()
    make_layer(tmp_path / "parent", {PID: [(A, 4, PE_PRESENT, text(4))]})
    images.mkdir()
    os.symlink("../parent", images / "parent")
    with ps.PageServer(images, header_size=header_size, timeout=2) as srv:
        c = Client(srv.port, header_size)
        c.send(ps.PARENT)
        assert c.recv(4) == struct.pack("=i", 1)
        assert c.open2() == b"\1"
        c.send(ps.HOLE, nr=2, vaddr=A)
        c.send(ps.ADD, nr=2, vaddr=A + 2 * PS, payload=rand(2))
        c.send(ps.OPEN, dst=ps.encode_dst(7, shmem=True))  # no reply for OPEN
        c.send(ps.ADD_F, PE_PRESENT, 1, 0, dst=ps.encode_dst(7, shmem=True), payload=text(1))
        assert c.close(ps.FORCE_CLOSE) == struct.pack("=i", 0)
        result = srv.wait(5)
    assert [f for f, _ in result.files] == [f"pagemap-{PID}.img", "pagemap-shmem-7.img"]
    pm = Pagemap.load(images / f"pagemap-{PID}.img")
    assert [e.flags for e in pm.entries] == [PE_PARENT, PE_PRESENT]
    assert Pagemap.load(images / "pagemap-shmem-7.img").pages_id == 65538


def test_add_f_compressed_is_stored_as_sent_in_page_mode(tmp_path, header_size):
    images = tmp_path / "img"
    images.mkdir()
    pages = [text(1), bytes(PS), rand(1)]
    blocks = [lz4.block.compress(pages[0], store_size=False), b"", pages[2]]
    payload = b"".join(struct.pack("=I", len(b)) + b for b in blocks)
    make_layer(images, {}, pids=[PID])
    ps.stamp_inventory(images, Compression("page"))
    with ps.PageServer(images, header_size=header_size, timeout=2,
                       spec=Compression("page")) as srv:
        c = Client(srv.port, header_size)
        c.open2()
        c.send(ps.ADD_F_COMPRESSED, PE_PRESENT, 3, A, payload=payload)
        c.close()
        srv.wait(5)
    e = Pagemap.load(images / f"pagemap-{PID}.img").entries[0]
    assert e.sizes == [len(b) for b in blocks]
    with PageReader(images) as r:
        assert r.read(PID, A, 3) == b"".join(pages)


def test_lazy_get_from_compressed_images_with_parent(tmp_path, header_size):
    base, top = tmp_path / "1", tmp_path / "2"
    old, new = text(8, b"old"), rand(2)
    make_layer(base, {PID: [(A, 8, PE_PRESENT, old)]})
    make_layer(top, {PID: [(A, 6, PE_PARENT, None), (A + 6 * PS, 2, PE_PRESENT | PE_LAZY, new)]},
               parent="../1", spec=Compression("region", 4 * PS))
    with ps.PageServer(top, header_size=header_size, lazy=True, timeout=2) as srv:
        c = Client(srv.port, header_size)
        c.send(ps.GET, nr=8, vaddr=A + 4 * PS, dst=PID)  # bare pid; runs past the end
        hdr = ps.HeaderLayout(header_size).unpack(c.recv(header_size))
        assert (hdr.command, hdr.flags, hdr.nr_pages, hdr.vaddr, hdr.dst_id) == \
            (ps.ADD_F, PE_PRESENT, 4, A + 4 * PS, PID)
        assert c.recv(4 * PS) == old[4 * PS:6 * PS] + new
        c.send(ps.GET, nr=1, vaddr=A + 64 * PS, dst=PID)  # nothing dumped there
        assert ps.HeaderLayout(header_size).unpack(c.recv(header_size)).nr_pages == 0
        assert c.close() == struct.pack("=i", 0)
        assert srv.wait(5).payload_bytes == 4 * PS


def test_header_size_follows_criu_version():
    assert ps.header_size_for((4, 1, 1)) == 24
    assert ps.header_size_for((4, 2)) == 32
    assert ps.header_size_for((4, 2, 1)) == 32


# -- malformed peers -----------------------------------------------------------------------

def _send_raw(c, data):
    c.sock.sendall(data)


MALFORMED = {
    "truncated-header": (lambda c: (c.open2(), _send_raw(c, b"\x06\0\4\0\1"), c.drop()),
                         "connection closed after 5 of"),
    "unknown-command": (lambda c: c.send(0x77), "unknown command 0x77"),
    "bad-flags": (lambda c: (c.open2(), c.send(ps.ADD_F, 0x40, 1, A)), "unknown page flags 0x40"),
    "present-and-parent": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_PRESENT | PE_PARENT, 1, A)),
                           "PE_PRESENT and PE_PARENT together"),
    "flags-on-open": (lambda c: c.send(ps.OPEN2, flags=PE_PRESENT), "flags are only valid"),
    "zero-pages": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_PRESENT, 0, A)), "nr_pages is 0"),
    "unaligned": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_LAZY, 1, A + 12)),
                  "not page aligned"),
    "huge-count": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_PRESENT, 0xFFFFFFFF, 0)),
                   "over this server's limit"),
    "beyond-address-space": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_LAZY, 0xFFFFFFFF,
                                                          0xFFFFFFFFFF000000)),
                             "beyond any user address space"),
    "dst-not-opened": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_LAZY, 1, A,
                                                    dst=ps.encode_dst(43))),
                       "is not the open pagemap"),
    "add-before-open": (lambda c: c.send(ps.ADD_F, PE_LAZY, 1, A), "was not opened"),
    "bad-dst-type": (lambda c: c.send(ps.OPEN2, dst=(5 << 8) | 9), "unknown pagemap type 9"),
    "opened-twice": (lambda c: (c.open2(), c.open2()), "already opened"),
    "unsorted": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_LAZY, 1, A + PS),
                            c.send(ps.ADD_F, PE_LAZY, 1, A)), "overlaps or precedes"),
    "compressed-size-over-page": (
        lambda c: (c.open2(), c.send(ps.ADD_F_COMPRESSED, PE_PRESENT, 1, A,
                                     payload=struct.pack("=I", PS + 1))),
        "is over a page"),
    "compressed-garbage-block": (
        lambda c: (c.open2(), c.send(ps.ADD_F_COMPRESSED, PE_PRESENT, 1, A,
                                     payload=struct.pack("=I", 10) + b"\xff" * 10)),
        "page 0"),
    "get-while-receiving": (lambda c: c.send(ps.GET, nr=1, vaddr=A, dst=PID),
                            "GET is for a server"),
    "short-payload-then-hangup": (
        lambda c: (c.open2(), c.send(ps.ADD_F, PE_PRESENT, 4, A, payload=rand(1)), c.drop()),
        "connection closed after"),
    "stall-mid-payload": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_PRESENT, 4, A,
                                                       payload=rand(1))),
                          "nothing received for 0.5s"),
    "stall-before-close": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_LAZY, 1, A)),
                           "nothing received for 0.5s while waiting for a command header"),
    "hangup-without-close": (lambda c: (c.open2(), c.drop()), "connection closed without CLOSE"),
    "garbage-after-close": (lambda c: (c.open2(), c.send(ps.ADD_F, PE_PRESENT, 1, A,
                                                         payload=rand(1)),
                                       c.send(ps.CLOSE, dst=0), _send_raw(c, b"junk")),
                            "unexpected data after CLOSE"),
}


# refused at the very first command: not a criu session, so it is logged and ignored (it
# neither uses up --sessions nor becomes the result of the session criu will open)
FIRST_COMMAND = {"add-before-open", "bad-dst-type", "flags-on-open", "get-while-receiving",
                 "unknown-command"}


def wait_ignored(server, n=1, timeout=5):
    deadline = time.monotonic() + timeout
    while len(server.ignored) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.ignored


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_stream_is_refused_cleanly(server, header_size, case):
    action, expected = MALFORMED[case]
    c = Client(server.port, header_size)
    action(c)
    if case in FIRST_COMMAND:
        ignored = wait_ignored(server)
        assert len(ignored) == 1 and expected in ignored[0].error, ignored
        assert server.results == []
        with pytest.raises(ps.PageServerError) as info:
            server.wait(0.3)
        msg = str(info.value)  # a later wait still says why
        assert "failed before their first command" in msg and expected in msg, msg
    else:
        with pytest.raises(ps.PageServerError) as info:
            server.wait(5)
        msg = str(info.value)
        assert expected in msg, msg
        assert f"port {server.port}" in msg
    c.drop()
    # nothing installed, no staging left
    assert installed(server) == []
    assert not [n for n in os.listdir(server.images_dir) if n.startswith(".")]
    # the server is healthy: the next session goes through
    good_session(server, header_size)
    assert server.wait(5, index=0 if case in FIRST_COMMAND else 1).ok
    assert installed(server) == [f"pagemap-{PID}.img", "pages-65537.img"]
    log = server.log_path.read_text()
    assert "session FAILED" in log and expected.split(" ")[0] in log


def test_lazy_server_refuses_dump_commands(tmp_path, header_size):
    make_layer(tmp_path, {PID: [(A, 1, PE_PRESENT, text(1))]})
    with ps.PageServer(tmp_path, header_size=header_size, lazy=True, timeout=1) as srv:
        c = Client(srv.port, header_size)
        c.open2()
        assert "accepts only GET and CLOSE" in wait_ignored(srv)[0].error
        with pytest.raises(ps.PageServerError, match="accepts only GET and CLOSE"):
            srv.wait(0.3)
        c.drop()


@pytest.mark.parametrize("stray", [b"", b"GET / HTTP/1.0\r\n\r\n" * 3, b"\xff" * 7])
def test_stray_connection_does_not_use_up_the_only_session(tmp_path, header_size, stray):
    """A port scan (connect, send nothing or garbage, hang up) before criu connects."""
    images = tmp_path / "img"
    images.mkdir()
    with ps.PageServer(images, header_size=header_size, timeout=0.5, sessions=1) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(stray)
        wait_ignored(srv)
        assert srv._thread.is_alive()
        data = good_session(srv, header_size)
        assert srv.wait(5).ok and srv.results[0].payload_bytes == len(data)
    assert len(srv.ignored) == 1 and not srv.ignored[0].ok


def test_session_deadline_ends_a_dripping_peer(tmp_path, header_size):
    """One byte per half read-timeout never trips the per-read timeout; the session's
    overall deadline ends it."""
    images = tmp_path / "img"
    images.mkdir()
    with ps.PageServer(images, header_size=header_size, timeout=1.0,
                       session_timeout=1.5) as srv:
        c = Client(srv.port, header_size)
        assert c.open2() == b"\0"
        t0 = time.monotonic()
        with pytest.raises(ps.PageServerError, match="overall deadline of 1.5s"):
            for byte in ps.HeaderLayout(header_size).pack(ps.ADD_F, PE_LAZY, 1, A, DST) * 4:
                c.sock.sendall(bytes([byte]))
                time.sleep(0.5)
                if srv.results:
                    srv.wait(0)
        assert time.monotonic() - t0 < 6
        c.drop()


def test_pagemaps_per_session_are_bounded(tmp_path, header_size, monkeypatch):
    monkeypatch.setattr("zdtmpy.transport.psdump.MAX_PAGEMAPS", 5)
    images = tmp_path / "img"
    images.mkdir()
    with ps.PageServer(images, header_size=header_size, timeout=1) as srv:
        c = Client(srv.port, header_size)
        for pid in range(1, 7):
            c.send(ps.OPEN, dst=ps.encode_dst(pid))
        with pytest.raises(ps.PageServerError, match="more than 5 pagemaps in one session"):
            srv.wait(5)
        c.drop()
        assert not [n for n in os.listdir(images) if n.startswith((".", "pagemap", "pages"))]


def test_stop_during_session_discards_it(tmp_path, header_size):
    srv = ps.PageServer(tmp_path, header_size=header_size, timeout=5)
    srv.start()
    c = Client(srv.port, header_size)
    c.open2()
    c.send(ps.ADD_F, PE_PRESENT, 2, A, payload=rand(1))
    srv.stop()
    c.drop()
    assert os.listdir(tmp_path) == []


def test_listen_error_names_the_address(tmp_path):
    with ps.PageServer(tmp_path) as first:
        other = ps.PageServer(tmp_path, port=first.port)
        with pytest.raises(ps.PageServerError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            other.start()


def test_stamp_inventory_is_atomic_and_idempotent(tmp_path):
    make_layer(tmp_path, {}, pids=[1])
    spec = Compression("region", 64 << 10)
    assert ps.stamp_inventory(tmp_path, spec)
    from zdtmpy.images import ImageSet

    iset = ImageSet(tmp_path)
    assert (iset.img_version, iset.compress, iset.compress_region_size) == (3, 2, 64 << 10)
    assert not ps.stamp_inventory(tmp_path, spec)
    assert sorted(os.listdir(tmp_path)) == ["inventory.img", "pstree.img"]
