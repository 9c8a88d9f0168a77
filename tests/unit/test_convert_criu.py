"""With a real criu (4.1.1, no compression support): a compressed (version-3) dump is refused
cleanly; after decompress the same dump restores."""

import os
import signal
import subprocess
import time

import pytest

from zdtmpy.cachedir import criu_build
from zdtmpy.compress import Compression, compress_dir, decompress_dir, verify_dir
from zdtmpy.images import ImageSet, PageReader

CRIU = criu_build("4.1.1")

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(CRIU is None, reason="criu 4.1.1 not built by ci/provision-criu.sh"),
    pytest.mark.skipif(os.geteuid() != 0, reason="criu dump/restore needs root"),
]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def criu(*args, timeout=60):
    return subprocess.run([str(CRIU), *map(str, args)], check=False, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


@pytest.fixture
def dumped(tmp_path):
    """A dump of a setsid'ed `sleep 1000` (the process is gone and reaped afterwards)."""
    img = tmp_path / "img"
    img.mkdir()
    proc = subprocess.Popen(["/bin/sleep", "1000"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True, start_new_session=True)
    try:
        time.sleep(0.2)
        res = criu("dump", "-t", proc.pid, "-D", img, "-o", "dump.log", "-v4")
        if res.returncode != 0:
            pytest.skip(f"criu dump does not work here (exit {res.returncode}): "
                        f"{(img / 'dump.log').read_text()[-500:]}")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return img, proc.pid


def restore(img, pid):
    """criu restore in the foreground; returns (criu Popen, restored pid or None)."""
    pidfile = img / "restore.pid"
    r = subprocess.Popen([str(CRIU), "restore", "-D", str(img), "-o", "restore.log", "-v4",
                          "--pidfile", str(pidfile)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            return r, int(pidfile.read_text())
        if r.poll() is not None:
            return r, None
        time.sleep(0.05)
    r.kill()
    r.wait()
    pytest.fail("criu restore neither restored nor exited in 30 s")


def test_v3_refused_then_decompressed_restores(dumped):
    img, pid = dumped
    pagemap = f"pagemap-{pid}.img"
    before = PageReader(img)
    pages = {e.vaddr: before.read(pid, e.vaddr, e.nr_pages)
             for e in before.layers[0].pagemaps[pid].entries if e.present}
    before.close()

    res = compress_dir(img, Compression("page"))
    assert res.changed and ImageSet(img).img_version == 3
    assert verify_dir(img) == []
    assert (img / (pagemap + ".bak")).exists()

    proc, restored = restore(img, pid)
    if restored is not None:
        os.kill(restored, signal.SIGKILL)
        proc.wait(timeout=30)
        pytest.fail("criu 4.1.1 restored a version-3 (compressed) image set")
    assert proc.wait(timeout=30) != 0
    log = (img / "restore.log").read_text()
    assert "Not supported images version" in log, log[-2000:]
    assert not alive(pid)

    res = decompress_dir(img)
    assert res.changed and ImageSet(img).img_version == 2
    with PageReader(img) as r:
        for vaddr, data in pages.items():
            assert r.read(pid, vaddr, len(data) // 4096) == data

    proc, restored = restore(img, pid)
    assert restored == pid, (img / "restore.log").read_text()[-2000:]
    try:
        assert alive(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"/bin/sleep"
    finally:
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)                  # criu (the restored tree's parent) reaps it
    assert not alive(pid)
