"""A full disk in the library layer: the user sees ENOSPC naming the file (one clean error,
no traceback), staging is removed, the original set is byte-identical, servers survive.

Each test mounts a small tmpfs of its own under its tmp_path and unmounts it at the end."""

import os
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from zdtmpy import cli
from zdtmpy.codec import Compression
from zdtmpy.compress import compress_dir, decompress_dir
from zdtmpy.compress.install import STAGE
from zdtmpy.compress.synth import make_layer
from zdtmpy.errors import ImageError, ZdtmError
from zdtmpy.images import PE_PRESENT
from zdtmpy.transport import pageserver as ps
from zdtmpy.transport.capture import Capture

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1"
ENOSPC = os.strerror(28)  # "No space left on device"


@pytest.fixture
def small_fs(tmp_path):
    """mount(size) -> a fresh tmpfs directory of that many bytes, unmounted at teardown."""
    mounted = []

    def mount(size):
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                            "zdtmpy-test", str(point)], capture_output=True, text=True,
                           timeout=30)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30)
        if os.path.ismount(point):
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def fill(d, keep):
    """Take the free space of d's filesystem down to about `keep` bytes."""
    st = os.statvfs(d)
    free = st.f_bavail * st.f_frsize
    if free > keep:
        with open(d / "ballast", "wb") as f:
            f.truncate(0)
            os.posix_fallocate(f.fileno(), 0, free - keep)


def tree(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.parametrize("action", ["compress", "decompress"])
def test_enospc_in_a_rewrite_is_one_clean_error(small_fs, capsys, action):
    fs = small_fs(16 << 20)
    src = DATA / ("plain" if action == "compress" else "compressed")
    d = shutil.copytree(src, fs / "set")
    fill(fs, 200 << 10)  # room for a little of the new pages file, not all of it
    before = tree(d)
    with pytest.raises(ImageError, match=ENOSPC) as err:
        if action == "compress":
            compress_dir(d, Compression("page"))
        else:
            decompress_dir(d)
    assert str(d) in str(err.value)
    assert not (d / STAGE).exists()
    assert tree(d) == before
    assert cli.main([action, str(d)]) == 1
    msg = capsys.readouterr().err
    assert ENOSPC in msg and "Traceback" not in msg and not (d / STAGE).exists()
    assert tree(d) == before


def test_enospc_in_a_page_server_session(small_fs):
    """The session fails naming ENOSPC; the server thread survives and leaves no staging."""
    fs = small_fs(4 << 20)
    images = fs / "img"
    make_layer(images, {}, pids=[42])
    fill(fs, 64 << 10)
    srv = ps.PageServer(images, header_size=32, timeout=2, spec=Compression("off"))
    srv.start()
    try:
        layout = ps.HeaderLayout(32)
        data = os.urandom(256 * 4096)  # 1 MiB: cannot fit
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(layout.pack(ps.OPEN2, 0, 0, 0, ps.encode_dst(42)))
            assert s.recv(1) == b"\0"
            try:
                s.sendall(layout.pack(ps.ADD_F, PE_PRESENT, 256, 0x7F0000000000,
                                      ps.encode_dst(42)) + data)
                s.sendall(layout.pack(ps.CLOSE, 0, 0, 0, 0))
                s.recv(4)
            except OSError:
                pass  # the server may hang up first
        with pytest.raises(ZdtmError, match=ENOSPC):
            srv.wait(20)
        assert srv._thread.is_alive()
        assert not [n for n in os.listdir(images) if n.startswith(".")]
        assert not [n for n in os.listdir(images) if n.startswith(("pages-", "pagemap-"))]
    finally:
        srv.stop()


def test_enospc_in_a_page_server_session_is_told_while_the_peer_waits(small_fs):
    """The pages are written by the session's writer thread: when that fails while the peer
    sends nothing more (no CLOSE), the session ends at once naming ENOSPC, not after the
    receive timeout with a timeout message."""
    fs = small_fs(4 << 20)
    images = fs / "img"
    make_layer(images, {}, pids=[42])
    fill(fs, 64 << 10)
    srv = ps.PageServer(images, header_size=32, timeout=60, spec=Compression("off"))
    srv.start()
    try:
        layout = ps.HeaderLayout(32)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(layout.pack(ps.OPEN2, 0, 0, 0, ps.encode_dst(42)))
            assert s.recv(1) == b"\0"
            try:
                s.sendall(layout.pack(ps.ADD_F, PE_PRESENT, 256, 0x7F0000000000,
                                      ps.encode_dst(42)) + os.urandom(256 * 4096))
            except OSError:
                pass  # the server may hang up first
            with pytest.raises(ZdtmError, match=ENOSPC):
                srv.wait(20)   # well before the 60 s receive timeout
        assert not [n for n in os.listdir(images) if n.startswith(".")]
        assert not [n for n in os.listdir(images) if n.startswith(("pages-", "pagemap-"))]
    finally:
        srv.stop()


def fake_criu_dump(sock_path, name, data):
    """Send one file the way criu dump --stream does: request it, pass a pipe, write."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(sock_path))
    r, w = os.pipe()
    body = b"\x0a" + bytes([len(name)]) + name.encode()
    conn.sendall(struct.pack("<I", len(body)) + body)
    conn.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", r))])
    os.close(r)
    try:
        for off in range(0, len(data), 65536):
            os.write(w, data[off:off + 65536])
    except BrokenPipeError:
        pass  # the streamer gave up: what criu sees as "Broken pipe"
    finally:
        os.close(w)
        conn.close()


def test_enospc_in_stream_capture_is_a_streamer_error(small_fs, tmp_path):
    fs = small_fs(1 << 20)
    fill(fs, 64 << 10)
    images = tmp_path / "img"
    images.mkdir()
    cap = Capture(images, fs / "out.zstream", Compression("off"), accept_timeout=10,
                  idle_timeout=10)
    sock = cap.listen()
    dumper = threading.Thread(target=fake_criu_dump,
                              args=(sock, "pages-1.img", os.urandom(2 << 20)))
    dumper.start()
    try:
        with pytest.raises(ZdtmError) as err:
            cap.run()
    finally:
        dumper.join(30)
    text = str(err.value)
    assert ENOSPC in text and "out.zstream" in text, text
    assert not [n for n in os.listdir(fs) if n.endswith(".part")]
