"""Real criu through `zdtmpy stream`: dump --stream into a compressed stream, extract it,
restore it with plain criu, and restore --stream through serve (each criu found here)."""

import os
import subprocess
import sys
import time

import pytest

from zdtmpy import isolation
from zdtmpy.cachedir import criu_build
from zdtmpy.compress import verify_dir
from zdtmpy.cycle.stream import count_pages, dump_stats
from zdtmpy.images import ImageSet, PageReader

CRIUS = [p for p in (criu_build(v) for v in ("4.1.1", "4.2.1")) if p is not None]

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(not CRIUS, reason="no criu 4.1.1 or 4.2.1 built by ci/provision-criu.sh"),
    pytest.mark.skipif(os.geteuid() != 0, reason="criu dump/restore needs root"),
]

# A process with some memory of every kind: text, random, zero, half pages.
PROG = r"""
import os, random, time, sys
pages = []
for i in range(256):
    k = i % 4
    pages.append((b"page %d text " % i * 400)[:4096] if k == 0 else random.randbytes(4096)
                 if k == 1 else bytes(4096) if k == 2 else random.randbytes(2048) + bytes(2048))
blob = bytearray(b"".join(pages))
open(sys.argv[1], "w").write(str(os.getpid()))
while True:
    time.sleep(1)
"""


def zdtmpy(*args, timeout=60):
    return subprocess.Popen([sys.executable, "-m", "zdtmpy.cli", "stream", *map(str, args),
                             "--accept-timeout", "30", "--idle-timeout", "30"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_socket(proc, path):
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.01)


def criu(binary, *args):
    return subprocess.run([str(binary), *map(str, args), "-v4"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                          check=False)


def finish(proc):
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.fixture
def victim(tmp_path):
    isolation.become_subreaper()
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", PROG, str(ready)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True, start_new_session=True)
    while not (ready.exists() and ready.read_text()):
        assert proc.poll() is None
        time.sleep(0.05)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def restore_and_kill(binary, images, extra=()):
    pidfile = images / "r.pid"
    pidfile.unlink(missing_ok=True)
    res = criu(binary, "restore", "-D", images, "-d", "--pidfile", pidfile, "-o", "r.log",
               *extra)
    assert res.returncode == 0, (images / "r.log").read_text()[-3000:]
    pid = int(pidfile.read_text())
    assert isolation.alive(pid)
    assert isolation.kill_and_reap(pid, 10)
    assert isolation.wait_gone(pid, 10)


@pytest.mark.parametrize("binary", CRIUS, ids=lambda p: p.parts[-3])
@pytest.mark.parametrize("comp", [[], ["--compress", "page"], ["--region", "64K"]],
                         ids=["off", "page", "region64k"])
def test_dump_extract_restore_serve(tmp_path, victim, binary, comp):
    img, stream = tmp_path / "img", tmp_path / "s.zstream"
    img.mkdir()
    cap = zdtmpy("capture", "--images-dir", img, "--stream-file", stream, *comp)
    wait_socket(cap, img / "streamer-capture.sock")
    assert (os.stat(img / "streamer-capture.sock").st_mode & 0o777) == 0o600
    res = criu(binary, "dump", "--stream", "-t", victim.pid, "-D", img, "-o", "d.log")
    assert res.returncode == 0, (img / "d.log").read_text()[-3000:]
    finish(cap)
    victim.wait(10)
    assert sorted(p.name for p in img.iterdir()) == ["d.log", "stats-dump"]

    ext = tmp_path / "ext"
    finish(subprocess.Popen([sys.executable, "-m", "zdtmpy.cli", "stream", "extract",
                             "--stream-file", stream, "--images-dir", ext],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    assert verify_dir(ext) == []
    assert ImageSet(ext).compress == (0 if not comp else 1 if "page" in comp else 2)
    assert count_pages(ext)[0] == dump_stats(img).pages_written > 256
    with PageReader(ext) as rd:  # the random pages made it through bit for bit
        assert rd.pids() == [victim.pid]

    plain = tmp_path / "plain"
    with open(stream, "rb") as src:
        subprocess.run([sys.executable, "-m", "zdtmpy.cli", "stream", "extract",
                        "--stream-file", "-", "--images-dir", plain, "--decompress"],
                       stdin=src, check=True, capture_output=True, timeout=60)
    assert ImageSet(plain).img_version == 2 and not ImageSet(plain).compress
    restore_and_kill(binary, plain)  # plain criu restores the extracted directory

    rst = tmp_path / "rst"
    rst.mkdir()
    srv = zdtmpy("serve", "--images-dir", rst, "--stream-file", stream)
    wait_socket(srv, rst / "streamer-serve.sock")
    restore_and_kill(binary, rst, ["--stream"])
    log = finish(srv)
    assert "files served" in log
    assert sorted(p.name for p in rst.iterdir()) == ["r.log", "r.pid", "stats-restore"]


def test_truncated_stream_is_not_served(tmp_path, victim):
    binary = CRIUS[0]
    img, stream = tmp_path / "img", tmp_path / "s.zstream"
    img.mkdir()
    cap = zdtmpy("capture", "--images-dir", img, "--stream-file", stream, "--compress")
    wait_socket(cap, img / "streamer-capture.sock")
    assert criu(binary, "dump", "--stream", "-t", victim.pid, "-D", img, "-o", "d.log"
                ).returncode == 0
    finish(cap)
    stream.write_bytes(stream.read_bytes()[:-100])
    rst = tmp_path / "rst"
    rst.mkdir()
    srv = zdtmpy("serve", "--images-dir", rst, "--stream-file", stream)
    out, _ = srv.communicate(timeout=30)
    assert srv.returncode == 1
    assert b"truncated" in out and b"Traceback" not in out
    assert list(rst.iterdir()) == []
