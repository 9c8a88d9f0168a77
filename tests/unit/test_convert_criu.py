"""With a real criu (4.1.1, no compression support): a compressed (version-3) dump is refused
cleanly; after decompress the same dump restores."""

import contextlib
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
    """criu restore -d; returns (criu's exit code, restored pid or None).

    Detached, so criu has finished with the tree before the test touches it: killing a task
    that criu 4.1.1 is still finishing leaves criu waiting on a futex forever."""
    pidfile = img / "restore.pid"
    cmd = [str(CRIU), "restore", "-d", "-D", str(img), "-o", "restore.log", "-v4",
           "--pidfile", str(pidfile)]
    r = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = r.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(r.pid, signal.SIGKILL)
        r.wait()
        pytest.fail("criu restore did not finish in 60 s")
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    return rc, (int(text) if rc == 0 and text else None)


def reap(pid):
    """The restored task is our child (the plugin makes pytest a subreaper): reap it."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


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

    rc, restored = restore(img, pid)
    if restored is not None:
        os.kill(restored, signal.SIGKILL)
        reap(restored)
        pytest.fail("criu 4.1.1 restored a version-3 (compressed) image set")
    assert rc != 0
    log = (img / "restore.log").read_text()
    assert "Not supported images version" in log, log[-2000:]
    assert not alive(pid)

    res = decompress_dir(img)
    assert res.changed and ImageSet(img).img_version == 2
    with PageReader(img) as r:
        for vaddr, data in pages.items():
            assert r.read(pid, vaddr, len(data) // 4096) == data

    rc, restored = restore(img, pid)
    assert restored == pid, (img / "restore.log").read_text()[-2000:]
    try:
        assert alive(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"/bin/sleep"
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)
    assert not alive(pid)
