"""Page-server cycles: dump through zdtmpy's page server (compressing as the variant asks) or
through criu's own `criu page-server`, then verify, check, decompress and restore.

The server processes themselves are in `background`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ZdtmError
from . import Run, followed
from .background import (
    Blamer,
    page_server_args,
    start_criu_server,
    start_zdtmpy_server,
)
from .transforms import COMPRESS_FEATURE, link_copy, refuse_compressed

if TYPE_CHECKING:
    from ..transport.pageserver import PageServer


def verify_compressed(r: Run, images: Path, what: str) -> None:
    from ..compress import verify_dir

    with r.stage("verify"):
        problems = verify_dir(images)
        if problems:
            r.fail(f"zdtmpy verify of {what} ({images}):\n  "
                   + "\n  ".join(str(p) for p in problems))


def decompressed_copy(r: Run, images: Path, name: str) -> Path:
    """A hard-link copy of `images` decompressed for a criu that cannot read compression."""
    from ..compress import decompress_dir

    out = r.path(name)
    with r.stage("decompress"):
        link_copy(images, out)
        decompress_dir(out, in_place=True)
    return out


# -- cycles ----------------------------------------------------------------------------------

def run_zdtmpy(r: Run) -> None:
    """zdtmpy's server and criu's dump share one images directory."""
    from ..transport.pageserver import stamp_inventory

    compressed = r.variant.compression.enabled
    spec = r.variant.compression
    images = r.path("img")
    images.mkdir()
    with r.stage("page-server"):
        srv = start_zdtmpy_server(r, images, spec, lazy=False)

    def finish_dump() -> None:
        with r.stage("page-server"):
            result = srv.wait(r.timeout())
            if not result.files:
                r.fail(f"zdtmpy page server on port {srv.port} received no pagemap")
            if stamp_inventory(images, spec):
                srv.log(f"inventory stamped: img_version 3, compression {spec.name}")

    _dump_restore(r, images, page_server_args(srv.port), finish_dump, compressed,
                  ServerBlame(r, srv))


class ServerBlame:
    """zdtmpy's page server (a thread) as the cause of a failed dump: a full disk or a bad
    session there is what a user needs to read, not criu's "Broken pipe"."""

    SETTLE = 2.0  # seconds for the server thread to record a session criu saw end

    def __init__(self, r: Run, srv: PageServer) -> None:
        self.r, self.srv = r, srv

    def blame(self, failure: Exception) -> None:
        from . import StageError

        deadline = time.monotonic() + self.SETTLE
        while not self.srv.results and time.monotonic() < deadline:
            time.sleep(0.02)
        bad = [res for res in self.srv.results if not res.ok]
        if bad:
            raise StageError("page-server", self.r.test,
                             f"zdtmpy page server on port {self.srv.port}: session with "
                             f"{bad[0].peer} failed: {bad[0].error}\n"
                             f"what followed: {followed(failure)}") from failure


def run_criu(r: Run) -> None:
    """criu's own page server writes pagemaps and pages into img-ps/, merged into img/."""
    images = r.path("img")
    ps_dir = r.path("img-ps")
    ps_dir.mkdir()
    with r.stage("page-server"):
        helper, port = start_criu_server(r, "page-server", ["-D", str(ps_dir)],
                                         "page-server.log")

    def finish_dump() -> None:
        with r.stage("page-server"):
            helper.wait(r.timeout(), "page-server")
            moved = 0
            for p in sorted(ps_dir.iterdir()):
                if p.name.startswith(("pagemap-", "pages-")):
                    os.replace(p, images / p.name)
                    moved += 1
            if not moved:
                r.fail(f"criu page-server wrote no pagemap into {ps_dir}")

    _dump_restore(r, images, page_server_args(port), finish_dump, False, helper)


def _dump_restore(r: Run, images: Path, dump_extra: list[str],
                  finish_dump: Callable[[], None], compressed: bool,
                  helper: Blamer | None = None) -> None:
    w = r.start_recorded()
    manifest = w.manifest
    try:
        r.dump(w.pid, images, dump_extra, leave_running=r.norst)
    except ZdtmError as exc:
        if helper is not None:
            helper.blame(exc)  # criu's "connection refused" is only what followed
        raise
    if r.desc.has("crfail"):
        r.stop_workload(w.pid)
        return
    finish_dump()
    if compressed:
        verify_compressed(r, images, "the images the page server wrote")
    if r.norst:
        r.check_images(images, manifest)
        r.stop_workload(w.pid)
        return
    r.wait_tree_gone(w.host_tree)
    r.dumped(images)
    r.check_images(images, manifest)
    restore_dir = images
    if compressed and not r.criu.has_feature(COMPRESS_FEATURE):
        # criu 4.1/4.2 must refuse the version-3 set, then restore a decompressed copy
        refuse_compressed(r, images)
        restore_dir = decompressed_copy(r, images, "img-restore")
        r.check_images(restore_dir, manifest, layer_note=" (decompressed)")
    r.verify_restored(w, r.restore(restore_dir))
