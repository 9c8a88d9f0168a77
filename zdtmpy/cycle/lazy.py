"""Lazy-pages cycles: restore with --lazy-pages while a `criu lazy-pages` daemon fills memory
on demand, from local images, from zdtmpy's page server serving compressed images, or from
criu's own `criu page-server --lazy-pages`.

In the remote modes the restoring side gets its own copy of the images in a form its criu
reads (decompressed); the lazily loaded pages travel over TCP from the source.
"""

from __future__ import annotations

from pathlib import Path

from .. import sysstate
from ..errors import ZdtmError
from . import Run, Started
from .background import (
    LOOPBACK,
    BackgroundCriu,
    Blamer,
    start_criu_server,
    start_zdtmpy_server,
)
from .pageserver import decompressed_copy, verify_compressed
from .transforms import compare_dumps, link_copy, prepare_for_restore

PIPE_MAX_SIZE = "/proc/sys/fs/pipe-max-size"
PIPE_MAX_NEEDED = 4194304  # criu page-server dies on the first GET below this (MACHINE.md)


def ensure_pipe_max_size(r: Run) -> None:
    """Raise fs.pipe-max-size for criu's remote lazy pages, saying so in the test's log."""
    log = r.path("sysctl.log")
    with r.stage("setup"):
        try:
            current = int(Path(PIPE_MAX_SIZE).read_text())
        except (OSError, ValueError) as exc:
            r.fail(f"cannot read {PIPE_MAX_SIZE}: {exc}")
        if current >= PIPE_MAX_NEEDED:
            return
        try:
            # The last zdtmpy session on the machine puts the first value found back.
            sysstate.remember("fs/pipe-max-size", str(current))
        except OSError as exc:
            r.fail(f"cannot record fs.pipe-max-size ({current}) before raising it, in the "
                   f"machine's session registry: {exc}")
        try:
            Path(PIPE_MAX_SIZE).write_text(str(PIPE_MAX_NEEDED))
        except OSError as exc:
            r.fail(f"fs.pipe-max-size is {current}; criu's remote lazy pages need "
                   f"{PIPE_MAX_NEEDED} and writing {PIPE_MAX_SIZE} failed: {exc.strerror}")
        log.write_text(f"sysctl fs.pipe-max-size raised from {current} to {PIPE_MAX_NEEDED} "
                       "(criu page-server --lazy-pages needs it)\n")
        r.attach("sysctl", log)


def _dump(r: Run) -> tuple[Started, Path]:
    """Start the workload and dump it normally; returns (started, images)."""
    w = r.start_recorded()
    images = r.path("img")
    r.dump(w.pid, images)
    r.wait_tree_gone(w.host_tree)
    r.dumped(images)
    r.check_images(images, w.manifest)
    return w, images


def _lazy_restore(r: Run, restore_dir: Path, w: Started, lazy_args: list[str],
                  upstream: Blamer | None = None) -> BackgroundCriu:
    """lazy-pages daemon + restore --lazy-pages; the workload's verdict touches every page,
    then the daemon must exit cleanly. A failure after a helper died (the daemon, or the
    `upstream` page server feeding it) is reported as that helper's death."""
    # criu has no RPC request for this daemon: it stays a command. Over RPC the restore's
    # work dir (where the daemon's socket lives) is the test directory, so it shares that.
    work = ["--work-dir", str(r.workdir)] if r.backend.name == "rpc" else []
    daemon = BackgroundCriu(r, "lazy-pages", ["-D", str(restore_dir), *work, *lazy_args],
                            "lazy-pages.log")
    r.attach("criu lazy-pages log", daemon.log)
    r.attach("criu lazy-pages output", daemon.out)
    with r.stage("lazy-pages"):
        daemon.start(r.timeout())
    try:
        r.verify_restored(w, r.restore(restore_dir, ["--lazy-pages"]))
    except ZdtmError as exc:
        if upstream is not None:
            upstream.blame(exc)  # the source of the pages went first
        daemon.blame(exc)  # a dead daemon, not the workload, is the cause
        raise
    with r.stage("lazy-pages"):
        daemon.wait(r.timeout(2), "lazy-pages")
    return daemon


def run_local(r: Run) -> None:
    w, images = _dump(r)
    manifest = w.manifest
    restore_dir = prepare_for_restore(r, images, manifest)
    _lazy_restore(r, restore_dir, w, [])


def run_remote_zdtmpy(r: Run) -> None:
    w, images = _dump(r)
    manifest = w.manifest
    source = images
    if r.variant.compression.enabled:
        from ..compress import compress_dir

        source = r.path("img-source")
        with r.stage("compress"):
            link_copy(images, source)
            compress_dir(source, r.variant.compression, in_place=True)
        verify_compressed(r, source, "the compressed source images")
        r.check_images(source, manifest, layer_note=" (compressed source)")
        restore_dir = decompressed_copy(r, source, "img-restore")
        with r.stage("decompress"):
            diffs = compare_dumps(images, restore_dir)
            if diffs:
                r.fail("restore-side copy differs from the dump:\n  " + "\n  ".join(diffs))
    else:
        restore_dir = r.path("img-restore")
        link_copy(images, restore_dir)
    with r.stage("page-server"):
        srv = start_zdtmpy_server(r, source, None, lazy=True)
    _lazy_restore(r, restore_dir, w,
                  ["--page-server", "--address", LOOPBACK, "--port", str(srv.port)])
    with r.stage("page-server"):
        result = srv.wait(r.timeout())
        if not result.payload_bytes:
            r.fail(f"zdtmpy page server on port {srv.port} served no lazy page")


def run_remote_criu(r: Run) -> None:
    w, images = _dump(r)
    ensure_pipe_max_size(r)
    restore_dir = r.path("img-restore")
    link_copy(images, restore_dir)
    with r.stage("page-server"):
        helper, port = start_criu_server(r, "page-server", ["-D", str(images), "--lazy-pages"],
                                         "page-server.log")
    _lazy_restore(r, restore_dir, w,
                  ["--page-server", "--address", LOOPBACK, "--port", str(port)], helper)
    with r.stage("page-server"):
        helper.wait(r.timeout(), "page-server")
