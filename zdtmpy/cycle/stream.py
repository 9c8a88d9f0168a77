"""The stream cycle: dump and restore through zdtmpy's image streamer (`criu --stream`).

capture (compressing as the variant says) -> criu dump --stream -> page counts against
criu's stats-dump -> extract, verify, oracle -> serve (decompressing) during
criu restore --stream -> visible state, verdict.

The streamer runs as a `zdtmpy stream` child process: its log is attached to a failing
test's report, and Run's cleanup kills it (and removes its socket) whatever happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..criu import returncode_text
from ..errors import ImageError, StageTimeout, ZdtmError
from ..isolation import tree_pids
from ..transport.streamproto import CAPTURE_SOCKET, SERVE_SOCKET
from . import Run, followed

SOCKET_ROOM = len(CAPTURE_SOCKET) + 2  # "/" and the NUL
BLAME_SETTLE = 2.0  # seconds a streamer gets to exit after criu failed
def dump_stats(images: Path):
    """criu's dump_stats_entry from DIR/stats-dump (written locally even with --stream)."""
    from ..images import STATS_MAGIC, read_image
    from ..images.messages import StatsEntry, decode

    raw = read_image(images / "stats-dump", STATS_MAGIC)
    if not raw.entries:
        raise ImageError(f"{images / 'stats-dump'}: no stats entry")
    stats = decode(StatsEntry, raw.entries[0], f"{images / 'stats-dump'}")
    if not stats.HasField("dump"):
        raise ImageError(f"{images / 'stats-dump'}: no dump statistics")
    return stats.dump


def count_pages(images: Path) -> tuple[int, int]:
    """(present pages of process pagemaps, of shmem pagemaps) in an image directory."""
    from ..images import ImageSet

    own = shared = 0
    for key, pm in ImageSet(images).pagemaps.items():
        n = sum(e.nr_pages for e in pm.entries if e.present)
        if isinstance(key, tuple):
            shared += n
        else:
            own += n
    return own, shared


def check_counts(r: Run, images: Path, extracted: Path):
    with r.stage("stream-counts"):
        stats = dump_stats(images)
        own, shared = count_pages(extracted)
        problems = []
        if own != stats.pages_written:
            problems.append(f"process pagemaps hold {own} present pages, criu's stats-dump "
                            f"says pages_written={stats.pages_written}")
        if stats.HasField("shpages_written") and shared != stats.shpages_written:
            problems.append(f"shmem pagemaps hold {shared} present pages, criu's stats-dump "
                            f"says shpages_written={stats.shpages_written}")
        if problems:
            r.fail("the stream lost or invented pages:\n  " + "\n  ".join(problems))


# -- the streamer child ------------------------------------------------------------------------

class StreamerProcess:
    """`zdtmpy stream capture|serve` as a child: ready when its socket appears."""

    def __init__(self, r: Run, action: str, args: list, sock: Path, log_name: str):
        self.r = r
        self.action = action
        self.sock = sock
        self.log = r.path(log_name)
        r.attach(f"zdtmpy stream {action} log ({log_name})", self.log)
        cmd = [sys.executable, "-m", "zdtmpy.cli", "stream", action, *map(str, args),
               "--accept-timeout", str(r.timeout()), "--idle-timeout", str(r.timeout())]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=logf, close_fds=True, start_new_session=True,
                                         env=r.env())
        r.on_cleanup(self.kill)

    def wait_ready(self):
        deadline = time.monotonic() + self.r.timeout()
        while not self.sock.exists():
            if self.proc.poll() is not None:
                self.r.fail(f"zdtmpy stream {self.action} "
                            f"{returncode_text(self.proc.returncode)} before listening:\n"
                            f"{self.tail()}")
            if time.monotonic() > deadline:
                raise StageTimeout(f"zdtmpy stream {self.action}: no socket {self.sock} after "
                                   f"{self.r.timeout():.0f}s")
            time.sleep(0.01)

    def wait_done(self):
        try:
            rc = self.proc.wait(self.r.timeout())
        except subprocess.TimeoutExpired:
            self.kill()
            raise StageTimeout(f"zdtmpy stream {self.action} did not finish within "
                               f"{self.r.timeout():.0f}s after criu; log {self.log}") from None
        if rc != 0:
            self.r.fail(f"zdtmpy stream {self.action} {returncode_text(rc)}:\n{self.tail()}")

    def blame(self, failure: Exception) -> None:
        """If the streamer ended badly before `failure` (killed, or its own error such as a
        full disk), raise a StageError naming that as the cause: criu's "Broken pipe" is
        only what followed."""
        from . import StageError

        try:  # criu saw the pipe break: give the streamer a moment to finish dying
            rc = self.proc.wait(BLAME_SETTLE)
        except subprocess.TimeoutExpired:
            return
        if rc == 0:
            return
        raise StageError(f"stream-{self.action}", self.r.test,
                         f"zdtmpy stream {self.action} {returncode_text(rc)}:\n{self.tail()}\n"
                         f"what followed: {followed(failure)}") from failure

    def tail(self, lines=15):
        from ..criu import read_head_tail

        try:
            first, last, _ = read_head_tail(self.log, head=0, tail=64 << 10)
        except OSError:
            return f"(no log at {self.log})"
        return "\n".join((first + last)[-lines:])

    def kill(self):
        """SIGTERM first (the streamer removes its socket and partial files), then SIGKILL."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.sock.exists():
            self.sock.unlink()


def socket_dir(r: Run, name: str) -> Path:
    """criu's -D directory for a streamer socket: in the test directory when the socket path
    fits AF_UNIX's 108 bytes, else a short temporary directory removed at cleanup."""
    path = r.path(name)
    if len(os.fsencode(path)) + SOCKET_ROOM < 100:
        path.mkdir(parents=True, exist_ok=True)
        return path
    short = Path(tempfile.mkdtemp(prefix="zdtms-"))
    r.on_cleanup(lambda: shutil.rmtree(short, ignore_errors=True))
    return short


def capture_args(spec) -> list:
    from ..codec.options import to_argv

    return to_argv(spec) if spec.enabled else []


# -- the cycle ---------------------------------------------------------------------------------

def run(r: Run) -> None:
    from ..compress import verify_dir
    from ..transport.streamformat import extract

    pid = r.start_workload()
    with r.stage("visible-state"):
        before = r.capture_state(pid)
        manifest = r.workload.manifest()
    host_tree = tree_pids(pid)
    norst = r.options.norst and not r.desc.has("reqrst")

    images = socket_dir(r, "img")
    stream_file = r.path("images.zstream")
    spec = r.variant.compression
    with r.stage("stream-capture"):
        cap = StreamerProcess(r, "capture", ["--images-dir", images, "--stream-file",
                                             stream_file, *capture_args(spec)],
                              images / CAPTURE_SOCKET, "stream-capture.log")
        cap.wait_ready()
    try:
        r.dump(pid, images, extra=["--stream"], leave_running=norst)
    except ZdtmError as exc:
        cap.blame(exc)
        raise
    if r.desc.has("crfail"):
        r.stop_workload(pid)
        return
    with r.stage("stream-capture"):
        cap.wait_done()

    extracted = r.path("img-extracted")
    with r.stage("stream-extract"):
        with open(stream_file, "rb") as src:
            extract(src, extracted, str(stream_file))
        problems = verify_dir(extracted)
        if problems:
            r.fail("zdtmpy verify of the extracted stream:\n  "
                   + "\n  ".join(str(p) for p in problems))
    check_counts(r, images, extracted)
    if norst:
        r.check_images(extracted, manifest)
        r.stop_workload(pid)
        return
    r.wait_tree_gone(host_tree)
    r.dumped(extracted)
    r.check_images(extracted, manifest, layer_note=f" (stream, {spec.name})")

    restore_dir = socket_dir(r, "img-restore")
    with r.stage("stream-serve"):
        srv = StreamerProcess(r, "serve", ["--images-dir", restore_dir, "--stream-file",
                                           stream_file], restore_dir / SERVE_SOCKET,
                              "stream-serve.log")
        srv.wait_ready()
    try:
        new_pid = r.restore(restore_dir, extra=["--stream"])
    except ZdtmError as exc:
        srv.blame(exc)
        raise
    with r.stage("stream-serve"):
        srv.wait_done()
    r.compare_state(before, new_pid)
    r.stop_workload(new_pid)
