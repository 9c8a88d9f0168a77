"""Page-server cycles: dump through zdtmpy's page server (compressing as the variant asks) or
through criu's own `criu page-server`, then verify, check, decompress and restore.

Also the helpers the lazy cycles share: a criu helper process in the background with a
readiness signal, and zdtmpy's page server run in a thread of this process.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..criu import log_excerpt, returncode_text, signal_name
from ..errors import CriuFailure, StageTimeout, ZdtmError
from . import Run, followed
from .transforms import COMPRESS_FEATURE, link_copy, refuse_compressed

LOOPBACK = "127.0.0.1"
PORT_ATTEMPTS = 5


class BackgroundCriu:
    """`criu ACTION ARGS --status-fd` in its own session: ready once criu writes its status
    byte (after it listens), ended by wait() or, on any failure, by the Run's cleanup."""

    def __init__(self, r: Run, action: str, args: list, log_name: str):
        self.r = r
        self.action = action
        self.log = r.path(log_name)
        self.out = r.path(log_name + ".out")
        self.cmd = [str(r.criu.path), action, *args, "-o", str(self.log), "-v4"]
        self.proc = None

    def start(self, timeout: float) -> None:
        rfd, wfd = os.pipe()
        try:
            with open(self.out, "ab") as out:
                self.proc = subprocess.Popen(
                    [*self.cmd, "--status-fd", str(wfd)], stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, pass_fds=(wfd,),
                    start_new_session=True, env=self.r.env())
            self.r.on_cleanup(self.kill)
            os.close(wfd)
            wfd = -1
            ready, _, _ = select.select([rfd], [], [], timeout)
            byte = os.read(rfd, 1) if ready else None
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)
        if byte is None:
            self.kill()
            raise StageTimeout(f"criu {self.action} was not ready within {timeout:g}s "
                               f"(killed); command: {' '.join(self.cmd)}\n"
                               f"{log_excerpt(self.log)}")
        if not byte:  # the pipe closed: criu exited before it was ready
            rc = self.proc.wait(timeout)
            raise CriuFailure(f"criu {self.action} exited with status {rc} before it was "
                              f"ready; command: {' '.join(self.cmd)}\n{log_excerpt(self.log)}")

    def wait(self, timeout: float, stage: str) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise StageTimeout(f"criu {self.action} did not exit within "
                               f"{timeout:g}s (killed)\n{log_excerpt(self.log)}") from None
        if rc != 0:
            how = f"was killed by {signal_name(-rc)}" if rc < 0 else f"exited with status {rc}"
            raise CriuFailure(f"criu {self.action} {how}; "
                              f"command: {' '.join(self.cmd)}\n{log_excerpt(self.log)}")
        return rc

    def blame(self, failure: Exception) -> None:
        """If this helper died before `failure`, raise a StageError naming its death."""
        from . import StageError

        if self.proc is None or self.proc.poll() in (None, 0):
            return
        raise StageError(self.action, self.r.test,
                         f"criu {self.action} {returncode_text(self.proc.returncode)} while "
                         f"the restored workload still depended on it; what followed: "
                         f"{followed(failure)}\n{log_excerpt(self.log)}") from failure

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def free_port() -> int:
    """A port nobody listens on right now (criu binds it itself; callers retry on a race)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def start_criu_server(r: Run, action: str, args: list, log_name: str) -> tuple:
    """Start a listening criu helper on a free port, retrying when another test took the port
    between our probe and criu's bind. Returns (BackgroundCriu, port)."""
    last = None
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        name = log_name if attempt == 0 else f"{log_name}.{attempt}"
        full_args = [*args, "--address", LOOPBACK, "--port", str(port)]
        log = r.path(name)
        r.attach(f"criu {action} log ({name})", log)
        try:
            if action == "page-server" and r.backend.name == "rpc":
                server = r.backend.start_page_server(full_args, log=log, timeout=r.timeout(),
                                                     env=r.env())
                r.on_cleanup(server.kill)
                return server, port
            helper = BackgroundCriu(r, action, full_args, name)
            helper.start(r.timeout())
            return helper, port
        except CriuFailure as exc:
            last = exc
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Address already in use" not in text and "bind" not in text.lower():
                raise
    raise last


def start_zdtmpy_server(r: Run, images: Path, spec, *, lazy: bool):
    """zdtmpy's page server in a thread, on an ephemeral loopback port, speaking the header
    layout of the criu under test; stopped by the Run's cleanup, its log attached."""
    from ..transport.pageserver import PageServer, header_size_for

    log = r.path("zdtmpy-page-server.log")
    srv = PageServer(images, spec=spec, header_size=header_size_for(r.criu.version),
                     address=LOOPBACK, lazy=lazy, timeout=r.timeout(), sessions=1,
                     log_path=log)
    r.attach("zdtmpy page-server log", log)
    srv.start()
    r.on_cleanup(srv.stop)
    return srv


def page_server_args(port: int) -> list:
    return ["--page-server", "--address", LOOPBACK, "--port", str(port)]


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

    def finish_dump():
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

    def __init__(self, r: Run, srv):
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

    def finish_dump():
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


def _dump_restore(r: Run, images: Path, dump_extra: list, finish_dump, compressed: bool,
                  helper: BackgroundCriu | None = None):
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
