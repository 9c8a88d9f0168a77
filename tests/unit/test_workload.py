"""zdtmpy.workload and the C workloads: real compiles, real processes, no mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from zdtmpy import pagegen
from zdtmpy.errors import BuildError, WorkloadError, WorkloadSkip
from zdtmpy.workload import (
    Workload,
    build_workload,
    default_static_dir,
    parse_manifest,
    parse_verdict,
    tree,
)

PAGE = 4096
REPO = Path(__file__).resolve().parents[2]
WORKLOADS = ["pages00", "pages01", "pages02", "pages03"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="workloads need CAP_SYS_ADMIN (PID ns)")


# ---- helpers ----------------------------------------------------------------------------------

@pytest.fixture
def scratch():
    """A temp directory removed afterwards (tests leave nothing behind)."""
    d = Path(tempfile.mkdtemp(prefix="zdtmpy-workload-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def run(scratch):
    """run(name_or_exe, **kw) -> started Workload; everything is killed at teardown."""
    started = []

    def _run(what, **kw):
        exe = build_workload(what) if isinstance(what, str) else what
        wl = Workload(exe, scratch / f"w{len(started)}", **kw)
        started.append(wl)
        wl.start()
        return wl

    yield _run
    for wl in started:
        wl.kill()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def wait_dead(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [p for p in pids if alive(p)]


def maps(pid: int) -> list[tuple[int, int, str, str]]:
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append((lo, hi, parts[1], parts[5] if len(parts) > 5 else ""))
    return out


def covering(vmas, start: int, end: int):
    """The VMAs covering [start, end) without a hole, or None."""
    got, pos = [], start
    for lo, hi, perms, path in sorted(vmas):
        if lo <= pos < hi:
            got.append((lo, hi, perms, path))
            pos = hi
            if pos >= end:
                return got
    return None


def read_mem(pid: int, addr: int, size: int) -> bytes:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
        f.seek(addr)
        return f.read(size)


def check_memory(wl: Workload, manifest, pids: dict[int, int]):
    """Every manifest page as the process has it equals the generator's page."""
    for r in manifest.regions:
        data = read_mem(pids[r.pid], r.start, r.pages * PAGE)
        bad = pagegen.first_mismatch(r.gen, r.seed, r.index, r.pages, data)
        assert bad == -1, f"{wl.name}: {r} page {bad} differs in /proc/{pids[r.pid]}/mem"


# ---- building ---------------------------------------------------------------------------------

def test_build_cache_hit(scratch, monkeypatch):
    monkeypatch.setenv("ZDTMPY_CACHE", str(scratch))
    exe = build_workload("pages00")
    assert exe.name == "pages00" and os.access(exe, os.X_OK)
    assert exe.parent.parent == scratch / "workloads"
    assert [p.name for p in exe.parent.iterdir()] == ["pages00"]  # objects not kept
    before = exe.stat()
    again = build_workload("pages00")
    assert again == exe
    # not rebuilt: the same file, untouched (no timing: a loaded machine makes any bound flaky)
    assert exe.stat().st_mtime_ns == before.st_mtime_ns and exe.stat().st_ino == before.st_ino


def test_concurrent_builds_share_one_result(scratch):
    env = dict(os.environ, ZDTMPY_CACHE=str(scratch / "cache"), PYTHONPATH=str(REPO))
    code = "from zdtmpy.workload import build_workload as b; print(b('pages01'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({o.strip() for o in outs}) == 1, outs
    entries = sorted(p.name for p in (scratch / "cache" / "workloads").iterdir())
    assert len([e for e in entries if not e.endswith(".lock")]) == 1, entries  # no temp dirs


def _static_copy(root: Path, sources: dict[str, str]) -> Path:
    sdir = root / "static"
    shutil.copytree(default_static_dir() / "lib", sdir / "lib")
    for name, text in sources.items():
        (sdir / f"{name}.c").write_text(text)
    return sdir


def test_build_error_has_compiler_output(scratch, monkeypatch):
    monkeypatch.setenv("ZDTMPY_CACHE", str(scratch / "cache"))
    sdir = _static_copy(scratch, {"broken": '#include "lib/zdtmtst.h"\n'
                                            "int main(void) { return undeclared_thing; }\n"})
    with pytest.raises(BuildError) as ei:
        build_workload("broken", static_dir=sdir)
    msg = str(ei.value)
    assert str(sdir / "broken.c") in msg and "undeclared_thing" in msg and "error" in msg, msg
    # nothing half-built is left in the cache
    assert not [p for p in (scratch / "cache" / "workloads").iterdir()
                if not p.name.endswith(".lock")]


def test_build_error_warning_is_an_error(scratch, monkeypatch):
    monkeypatch.setenv("ZDTMPY_CACHE", str(scratch / "cache"))
    sdir = _static_copy(scratch, {"warns": "int main(void) { int unused; return 0; }\n"})
    with pytest.raises(BuildError, match=r"(?s)warns\.c.*unused"):
        build_workload("warns", static_dir=sdir)


def test_build_error_missing_source(scratch):
    with pytest.raises(BuildError, match="no source .*nothere.c"):
        build_workload("nothere", static_dir=scratch)


# ---- the real workloads -----------------------------------------------------------------------

@pytest.mark.parametrize("name", WORKLOADS)
def test_workload_manifest_maps_fds_and_pass(run, name):
    wl = run(name)
    pid = wl.pid
    m = wl.manifest()
    assert m.step == 0 and m.regions
    pids = tree(pid)
    assert pids[1] == pid  # the test process is init of its own PID namespace
    assert set(m.pids()) <= set(pids), f"manifest pids {m.pids()} not in the tree {pids}"
    assert set(pids) == set(m.pids()), "every process of the tree owns pages"

    for ns, host in pids.items():
        vmas = maps(host)
        for r in m.for_pid(ns):
            cover = covering(vmas, r.start, r.end)
            assert cover, f"{name}: {r} not inside the mappings of pid {ns} (host {host})"
            assert all(p[0] == "r" for _, _, p, _ in cover), (r, cover)
            if r.label.startswith("file-") or r.label == "shared-file":
                assert all(path.startswith(str(wl.outfile)) for *_, path in cover), (r, cover)
        # no stray fds: stdin /dev/null, stdout/stderr the outfile, nothing else
        fds = {int(fd): os.readlink(f"/proc/{host}/fd/{fd}")
               for fd in os.listdir(f"/proc/{host}/fd")}
        assert fds == {0: "/dev/null", 1: str(wl.outfile), 2: str(wl.outfile)}, (ns, fds)
        status = Path(f"/proc/{host}/status").read_text()
        assert "\nNSpid:" in status

    check_memory(wl, m, pids)

    verdict = wl.stop(pid, timeout=30)
    assert (verdict.status, verdict.detail) == ("PASS", ""), verdict.output
    assert wl.wait_launcher(5) == 0
    assert not wait_dead(list(pids.values()))


def test_generate_agrees_with_workload_memory(run):
    wl = run("pages00")
    m = wl.manifest()
    by_label = {r.label: r for r in m.regions}
    for label in ("compressible", "random-guarded", "alternating", "half", "fill"):
        r = by_label[label]
        n = min(r.pages, 64)
        assert read_mem(wl.pid, r.start, n * PAGE) == pagegen.generate(r.gen, r.seed, r.index, n)
    # the file on disk keeps its own bytes; memory holds zeros
    r = by_label["file-private-zeroed"]
    assert read_mem(wl.pid, r.start, r.pages * PAGE) == bytes(r.pages * PAGE)
    assert Path(f"{wl.outfile}.private-file").read_bytes() == b"\xa5" * (r.pages * PAGE)
    assert wl.stop(wl.pid).status == "PASS"


@pytest.mark.parametrize("name,label,owner", [
    ("pages00", "random-guarded", 1),
    ("pages01", "cow-random", 3),    # the grandchild: its failure reaches the init
    ("pages02", "shared-anon", 1),
])
def test_corruption_gives_fail_naming_the_address(run, name, label, owner):
    wl = run(name)
    m = wl.manifest()
    r = next(r for r in m.regions if r.label == label and r.pid == owner and r.pages > 3)
    host = tree(wl.pid)[r.pid]
    addr = r.start + 3 * PAGE
    with open(f"/proc/{host}/mem", "r+b", buffering=0) as f:
        f.seek(addr + 100)
        old = f.read(8)
        f.seek(addr + 100)
        f.write(bytes(b ^ 0xFF for b in old))
    verdict = wl.stop(wl.pid)
    assert verdict.status == "FAIL", verdict.output
    assert f"{addr:#x}" in verdict.detail and label in verdict.detail, verdict.detail
    assert f"pid {owner}" in verdict.detail, verdict.detail


def test_pages03_steps(run):
    wl = run("pages03")
    seen = [wl.manifest()]
    for k in (1, 2, 3, 4):
        m = wl.next_step(wl.pid, timeout=10)
        assert m.step == k
        regions = sorted(m.regions, key=lambda r: r.start)
        # exact and complete: adjacent lines covering the 64 MiB mapping
        assert sum(r.pages for r in regions) == 64 * 256
        assert all(a.end == b.start for a, b in zip(regions, regions[1:]))
        assert m.regions != seen[-1].regions
        check_memory(wl, m, {1: wl.pid})
        seen.append(m)

    def page_gen(m, page):
        base = min(r.start for r in m.regions)
        r = next(r for r in m.regions if r.start <= base + page * PAGE < r.end)
        return r.gen, r.seed

    assert page_gen(seen[0], 777) == ("pattern", 7)
    assert page_gen(seen[1], 777) == ("random", 1001)
    assert page_gen(seen[3], 777) == ("random", 1003)
    assert page_gen(seen[1], 10)[0] == "random" and page_gen(seen[3], 10)[0] == "zero"
    assert page_gen(seen[1], 2001)[0] == "zero"
    assert wl.stop(wl.pid).status == "PASS"


def test_step_on_a_workload_without_steps(run):
    wl = run("pages01")
    m0 = wl.manifest()
    m1 = wl.next_step(wl.pid, timeout=10)
    assert m1.step == 1 and m1.regions == m0.regions
    assert wl.stop(wl.pid).status == "PASS"


def test_no_ns_mode(run):
    wl = run("pages02", no_ns=True)
    m = wl.manifest()
    assert min(m.pids()) == wl.pid  # host pids: no namespace
    check_memory(wl, m, {p: p for p in m.pids()})
    assert wl.stop(wl.pid).status == "PASS"


def test_kill_leaves_nothing(run):
    wl = run("pages01")
    pids = list(tree(wl.pid).values())
    launcher = wl._proc.pid
    wl.kill()
    assert not wait_dead(pids + [launcher])
    wl.kill()  # idempotent


# ---- protocol edge cases with small custom workloads ------------------------------------------

EDGE = {
    "skipper": '#include "lib/zdtmtst.h"\n'
               "int main(int c, char **v)\n"
               "{ zt_init(c, v); zt_skip(\"no %s here\", \"widget\"); }\n",
    "fatal": '#include "lib/zdtmtst.h"\n'
             "int main(int c, char **v) { zt_init(c, v); zt_fatal(\"cannot set up %d\", 42); }\n",
    "hang": '#include <unistd.h>\n#include "lib/zdtmtst.h"\n'
            "int main(int c, char **v) { zt_init(c, v); for (;;) pause(); }\n",
    "deaf": '#include <signal.h>\n#include <unistd.h>\n#include "lib/zdtmtst.h"\n'
            "int main(int c, char **v) { sigset_t s; zt_init(c, v); zt_ready();\n"
            "  sigfillset(&s); sigprocmask(SIG_BLOCK, &s, 0); for (;;) pause(); }\n",
    "args": '#include <string.h>\n#include "lib/zdtmtst.h"\n'
            "int main(int c, char **v) { zt_init(c, v);\n"
            "  if (zt_opt.argc != 2 || strcmp(zt_opt.argv[1], \"--x=1\")) zt_fatal(\"args\");\n"
            "  zt_ready(); zt_run(0, 0); }\n",
}


@pytest.fixture(scope="module")
def edge_exe():
    d = Path(tempfile.mkdtemp(prefix="zdtmpy-edge-"))
    try:
        sdir = _static_copy(d, EDGE)
        yield {name: build_workload(name, static_dir=sdir) for name in EDGE}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_skip(run, edge_exe):
    with pytest.raises(WorkloadSkip, match="SKIP: no widget here"):
        run(edge_exe["skipper"])


def test_setup_failure_is_a_start_error(run, edge_exe):
    with pytest.raises(WorkloadError) as ei:
        run(edge_exe["fatal"])
    msg = str(ei.value)
    assert "stage 'start'" in msg and "exit status 1" in msg and "cannot set up 42" in msg, msg


def test_start_timeout_kills_the_namespace(run, edge_exe, scratch):
    t = time.monotonic()
    with pytest.raises(WorkloadError, match=r"stage 'start': not ready within 1 s"):
        run(edge_exe["hang"], start_timeout=1)
    assert time.monotonic() - t < 10
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and alive(int(p))
                 and _exe(int(p)) == str(edge_exe["hang"])]
    assert not leftovers


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def test_stop_timeout_kills(run, edge_exe):
    wl = run(edge_exe["deaf"])
    pid = wl.pid
    with pytest.raises(WorkloadError, match=r"stage 'stop': pid \d+ did not exit within 1 s"):
        wl.stop(pid, timeout=1)
    assert not wait_dead([pid])


def test_workload_args_are_passed(run, edge_exe):
    wl = run(edge_exe["args"], args=("one", "--x=1"))
    assert wl.stop(wl.pid).status == "PASS"


# ---- parsing ----------------------------------------------------------------------------------

def test_parse_manifest_and_verdict():
    m = parse_manifest("zdtm-manifest 1\nstep 2\n"
                       "region pid=1 start=0x7f0000001000 pages=3 gen=alt seed=5 index=7 "
                       "label=x\n")
    assert m.step == 2 and m.regions[0].start == 0x7F0000001000 and m.regions[0].end == \
        0x7F0000004000 and m.regions[0].gen == "alt"
    with pytest.raises(WorkloadError, match="m.txt: line 1"):
        parse_manifest("nope\n", "m.txt")
    with pytest.raises(WorkloadError, match="m.txt: line 3: unknown gen 'bogus'"):
        parse_manifest("zdtm-manifest 1\nstep 0\nregion pid=1 start=0x1000 pages=1 gen=bogus "
                       "seed=0 index=0 label=x\n", "m.txt")
    with pytest.raises(WorkloadError, match="no 'step N' line"):
        parse_manifest("zdtm-manifest 1\n")
    v = parse_verdict("noise\nFAIL: pid 1 region x page 0 at 0x1000\nmore noise\n")
    assert (v.status, v.detail) == ("FAIL", "pid 1 region x page 0 at 0x1000")
    assert parse_verdict("PASS\n").detail == "" and parse_verdict("nothing\n") is None
