"""Crafted streams: decoded sizes are bounded and checked before anything reaches criu or
the disk; a stream that passes its checksums but lies about sizes is refused up front."""

import os
import socket
import struct
import threading

import pytest

from zdtmpy import cli
from zdtmpy.codec import Compression
from zdtmpy.compress.synth import make_layer
from zdtmpy.images import PE_PRESENT
from zdtmpy.transport import streamextract as sx
from zdtmpy.transport import streamformat as sf
from zdtmpy.transport import streamindex as si
from zdtmpy.transport.capture import Capture
from zdtmpy.transport.serve import Serve
from zdtmpy.transport.streamproto import StreamerError

PS = 4096


def zero_bomb(path, nblocks, block=4 << 20):
    """A CRC-valid stream: one pages file whose single BLOCKS record is nblocks zero
    blocks (a few bytes each in the stream, `block` bytes each decoded)."""
    with open(path, "wb") as f:
        w = sf.StreamWriter(f, Compression("region", block))
        fid = w.open("pages-1.img")
        w.blocks(fid, block, nblocks * block, [0] * nblocks, b"")
        w.close(fid)
        w.end()
    return path


def test_blocks_record_of_a_gigabyte_is_refused_before_decoding(tmp_path):
    src = zero_bomb(tmp_path / "s", 256)          # ~1 KiB announcing 1 GiB
    assert src.stat().st_size < 2048
    with open(src, "rb") as f, pytest.raises(sf.StreamError, match="announces 1073741824"):
        sx.extract(f, tmp_path / "out", "s")
    assert os.listdir(tmp_path / "out") == []
    with pytest.raises(sf.StreamError, match="announces"):
        si.index_stream(src)
    (tmp_path / "rst").mkdir()
    with pytest.raises(sf.StreamError, match="announces"):
        Serve(tmp_path / "rst", src).listen()
    assert os.listdir(tmp_path / "rst") == []


def plain_stream(tmp_path, files):
    with open(tmp_path / "s", "wb") as f:
        w = sf.StreamWriter(f)
        for name, data in files:
            fid = w.open(name)
            w.write(fid, data)
            w.close(fid)
        w.end()
    return tmp_path / "s"


@pytest.fixture
def layer(tmp_path):
    return make_layer(tmp_path / "src", {7: [(0x100000, 4, PE_PRESENT, bytes(range(256)) * 64)]})


def files(layer, pages=None):
    out = [(n, (layer / n).read_bytes()) for n in ("pagemap-7.img", "pages-1.img",
                                                   "pstree.img", "inventory.img")]
    if pages is not None:
        out[1] = ("pages-1.img", pages)
    return out


@pytest.mark.parametrize("pages, match", [
    (b"", r"pages-1.img: 0 bytes in the stream, but pagemap-7.img describes 4 pages"),
    (bytes(3 * PS), r"3 \* 4096|12288 bytes in the stream"),
    (bytes(5 * PS), r"20480 bytes in the stream"),
])
def test_serve_refuses_pages_that_do_not_match_the_pagemap(tmp_path, layer, pages, match):
    src = plain_stream(tmp_path, files(layer, pages))
    (tmp_path / "rst").mkdir()
    with pytest.raises(StreamerError, match=match):
        Serve(tmp_path / "rst", src).listen()
    assert os.listdir(tmp_path / "rst") == []
    with open(src, "rb") as f, pytest.raises(sf.StreamError, match=match):
        sx.extract(f, tmp_path / "out", "s")
    assert os.listdir(tmp_path / "out") == []


def test_serve_refuses_an_orphan_pages_file(tmp_path, layer):
    src = plain_stream(tmp_path, files(layer) + [("pages-9.img", bytes(PS))])
    (tmp_path / "rst").mkdir()
    with pytest.raises(StreamerError, match="pages-9.img: no pagemap in the stream names it"):
        Serve(tmp_path / "rst", src).listen()


def test_a_good_stream_still_passes_the_pre_serve_check(tmp_path, layer):
    src = plain_stream(tmp_path, files(layer))
    (tmp_path / "rst").mkdir()
    srv = Serve(tmp_path / "rst", src)
    srv.prepare()
    assert set(srv.index.files) == {"pagemap-7.img", "pages-1.img", "pstree.img",
                                    "inventory.img"}


@pytest.mark.parametrize("kind", ["file", "socket", "directory"])
def test_capture_refuses_a_descriptor_that_is_not_a_pipe(tmp_path, kind):
    """The peer on the capture socket passes something else than a pipe's read end."""
    images = tmp_path / "img"
    images.mkdir()
    cap = Capture(images, tmp_path / "out.zstream", Compression("off"), accept_timeout=10,
                  idle_timeout=10)
    sock = cap.listen()
    if kind == "file":
        (tmp_path / "f").write_bytes(b"not a pipe")
        fd = os.open(tmp_path / "f", os.O_RDONLY)
    elif kind == "directory":
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        a, b = socket.socketpair()
        fd = os.dup(a.fileno())
        a.close()
        b.close()

    def peer():
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(sock))
        body = b"\x0a" + bytes([len("pages-1.img")]) + b"pages-1.img"
        conn.sendall(struct.pack("<I", len(body)) + body)
        conn.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
        conn.recv(1)  # until capture hangs up
        conn.close()

    t = threading.Thread(target=peer)
    t.start()
    try:
        with pytest.raises(StreamerError, match=f"pages-1.img: the peer passed a .*{kind}"):
            cap.run()
    finally:
        t.join(10)
        os.close(fd)
    assert not (tmp_path / "out.zstream").exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]


def test_extract_command_refuses_a_lying_stream_before_writing(tmp_path, layer, capsys):
    """Zero blocks announcing far more pages than the pagemap: nothing is written at all."""
    with open(tmp_path / "s", "wb") as f:
        w = sf.StreamWriter(f, Compression("region", 4 << 20))
        for name, data in files(layer):
            fid = w.open(name)
            if name.startswith("pages-"):
                for _ in range(3):  # 3 records of 4 zero regions: 48 MiB announced
                    w.blocks(fid, 4 << 20, 16 << 20, [0] * 4, b"")
            else:
                w.write(fid, data)
            w.close(fid)
        w.end()
    out = tmp_path / "out"
    assert cli.main(["stream", "extract", "--stream-file", str(tmp_path / "s"),
                     "--images-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "refusing to extract, nothing was written" in err and "Traceback" not in err
    assert "50331648 bytes in the stream, but pagemap-7.img describes 4 pages" in err
    assert not out.exists() or os.listdir(out) == []
