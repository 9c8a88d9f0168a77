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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ImageError, ZdtmError
from ..isolation import tree_pids
from ..transport.streamproto import CAPTURE_SOCKET, SERVE_SOCKET
from . import Run
from .background import StreamerProcess

if TYPE_CHECKING:
    from ..codec import Compression
    from ..images.messages import Message

SOCKET_ROOM = len(CAPTURE_SOCKET) + 2  # "/" and the NUL
def dump_stats(images: Path) -> Message:
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


def count_problems(stats: Message, own: int, shared: int) -> list[str]:
    """How the present pages counted in pagemaps (own, shmem) disagree with what criu's
    dump_stats_entry says it wrote; empty when they agree."""
    problems = []
    if own != stats.pages_written:
        problems.append(f"process pagemaps hold {own} present pages, criu's stats-dump "
                        f"says pages_written={stats.pages_written}")
    if stats.HasField("shpages_written") and shared != stats.shpages_written:
        problems.append(f"shmem pagemaps hold {shared} present pages, criu's stats-dump "
                        f"says shpages_written={stats.shpages_written}")
    return problems


def check_counts(r: Run, images: Path, extracted: Path) -> None:
    with r.stage("stream-counts"):
        problems = count_problems(dump_stats(images), *count_pages(extracted))
        if problems:
            r.fail("the stream lost or invented pages:\n  " + "\n  ".join(problems))


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


def capture_args(spec: Compression) -> list[str]:
    from ..codec.options import to_argv

    return to_argv(spec) if spec.enabled else []


# -- the cycle ---------------------------------------------------------------------------------

def run(r: Run) -> None:
    from ..compress import verify_dir
    from ..transport.streamextract import extract

    pid = r.start_workload()
    with r.stage("visible-state"):
        before = r.capture_state(pid)
        manifest = r.started().manifest()
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
