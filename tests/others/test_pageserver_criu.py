"""zdtmpy's page server against criu's own, with real criu (4.1.1: 24-byte headers, 4.2.1:
32-byte): the same process dumped (--leave-running, it sleeps in pause()) once through
`criu page-server` and once through zdtmpy's compressing server gives, after decompress,
the same pages and the same parsed pagemaps (entries compared as runs of pages: criu cuts
them where a page pipe is full, which varies between dumps); and zdtmpy's images restore."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pagemapruns import page_runs

from zdtmpy.cachedir import criu_build
from zdtmpy.compress import Compression, decompress_dir, verify_dir
from zdtmpy.cycle.background import free_port
from zdtmpy.images import ImageSet, Pagemap
from zdtmpy.transport.pageserver import PageServer, header_size_for, stamp_inventory

BIGMIX = Path(__file__).resolve().parents[2] / "zdtmpy" / "bench" / "bigmix.c"
VERSIONS = ["4.1.1", "4.2.1"]   # 24- and 32-byte page-server headers
SPECS = {"off": Compression("off"), "page": Compression("page"),
         "region64k": Compression("region", 64 << 10)}

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(os.geteuid() != 0, reason="criu dump/restore needs root"),
    pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the workload"),
]


def criu_path(version):
    path = criu_build(version)
    if path is None:
        pytest.skip(f"criu {version} not built (ci/provision-criu.sh --from-source "
                    f"--version {version})")
    return path


@pytest.fixture(scope="module")
def bigmix(tmp_path_factory):
    exe = tmp_path_factory.mktemp("bigmix") / "bigmix"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(BIGMIX)], check=True, timeout=60)
    return exe


@pytest.fixture
def process(bigmix, tmp_path):
    out = tmp_path / "bigmix.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([str(bigmix), "24"], stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, close_fds=True,
                                start_new_session=True)
    # one CPU: the kernel rewrites rseq's cpu_id in the process's TLS when it migrates,
    # which would make the two dumps differ
    os.sched_setaffinity(proc.pid, {0})
    try:
        deadline = time.monotonic() + 20
        while "ready" not in out.read_text():
            assert time.monotonic() < deadline, "bigmix did not become ready"
            assert proc.poll() is None, out.read_text()
            time.sleep(0.02)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def run_criu(criu, *args, log, timeout=60):
    res = subprocess.run([str(criu), *map(str, args), "-o", str(log), "-v4"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert res.returncode == 0, f"criu {args[0]} failed: {Path(log).read_text()[-2000:]}"


def dump_via_criu_server(criu, pid, images, tmp_path):
    ps_dir = tmp_path / "criu-ps"
    ps_dir.mkdir()
    rfd, wfd = os.pipe()
    port = free_port()
    server = subprocess.Popen([str(criu), "page-server", "-D", str(ps_dir), "--address",
                               "127.0.0.1", "--port", str(port), "--status-fd", str(wfd),
                               "-o", str(tmp_path / "ps.log"), "-v4"],
                              pass_fds=(wfd,), stdin=subprocess.DEVNULL,
                              start_new_session=True)
    os.close(wfd)
    try:
        assert len(os.read(rfd, 1)) == 1, "criu page-server exited before it listened"
        run_criu(criu, "dump", "-t", pid, "-D", images, "--leave-running", "--page-server",
                 "--address", "127.0.0.1", "--port", port, log=images / "dump.log")
        assert server.wait(30) == 0
    finally:
        os.close(rfd)
        if server.poll() is None:
            server.kill()
            server.wait()
    for p in ps_dir.iterdir():
        os.replace(p, images / p.name)


def dump_via_zdtmpy(criu, version, pid, images, spec, log):
    with PageServer(images, spec=spec, header_size=header_size_for(version), log_path=log,
                    sessions=1, timeout=30) as srv:
        run_criu(criu, "dump", "-t", pid, "-D", images, "--leave-running", "--page-server",
                 "--address", "127.0.0.1", "--port", srv.port, log=images / "dump.log")
        result = srv.wait(30)
    stamp_inventory(images, spec)
    return result


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("version", VERSIONS)
def test_zdtmpy_server_matches_criu_server(version, spec_name, process, tmp_path):
    criu = criu_path(version)
    vtuple = tuple(int(x) for x in version.split("."))
    spec = SPECS[spec_name]
    theirs, ours = tmp_path / "criu", tmp_path / "zdtmpy"
    theirs.mkdir()
    ours.mkdir()
    dump_via_criu_server(criu, process.pid, theirs, tmp_path)
    result = dump_via_zdtmpy(criu, vtuple, process.pid, ours, spec, tmp_path / "zdtmpy-ps.log")

    assert result.files and verify_dir(ours) == []
    iset = ImageSet(ours)
    assert (iset.img_version, iset.compress) == ((3, spec.layout_id) if spec.enabled
                                                 else (ImageSet(theirs).img_version, 0))
    if spec.enabled:
        assert any(e.compressed for pm in iset.pagemaps.values() for e in pm.entries)
        decompress_dir(ours, in_place=True)

    names = sorted(n for n in os.listdir(theirs) if n.startswith("pagemap-"))
    assert names == sorted(n for n in os.listdir(ours) if n.startswith("pagemap-"))
    for name in names:
        a, b = Pagemap.load(theirs / name), Pagemap.load(ours / name)
        assert a.pages_id == b.pages_id >= 0x10001
        # the same pages with the same fields, however each dump cut them into entries
        # (pagemapruns: the cut follows fs.pipe-max-size, which may change between dumps)
        assert page_runs(a) == page_runs(b), name
        assert (theirs / a.pages_name).read_bytes() == (ours / b.pages_name).read_bytes(), name


@pytest.mark.parametrize("version", VERSIONS)
def test_images_from_zdtmpy_server_restore(version, process, tmp_path):
    criu = criu_path(version)
    vtuple = tuple(int(x) for x in version.split("."))
    images = tmp_path / "img"
    images.mkdir()
    dump_via_zdtmpy(criu, vtuple, process.pid, images, Compression("region", 256 << 10),
                    tmp_path / "ps.log")
    process.kill()  # restore needs its pid free
    process.wait(10)
    decompress_dir(images, in_place=True)
    pidfile = tmp_path / "restored.pid"
    run_criu(criu, "restore", "-D", images, "-d", "--pidfile", pidfile,
             log=images / "restore.log")
    pid = int(pidfile.read_text())
    try:
        # Alive and asleep in its loop; right after `restore -d` it may still be running
        # its first instructions, so give the scheduler a bounded moment on a busy machine.
        assert wait_for_state(pid, "S", timeout=10.0), Path(f"/proc/{pid}/status").read_text()
    finally:
        os.kill(pid, signal.SIGKILL)


def wait_for_state(pid: int, state: str, timeout: float) -> bool:
    """True once /proc/PID/status says `state`; False if it never does within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if f"State:\t{state}" in Path(f"/proc/{pid}/status").read_text():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
