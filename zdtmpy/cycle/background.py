"""Processes a test runs in the background, each with a readiness signal, its log attached
to the report and an end guaranteed by the Run's cleanup (pass, fail, timeout or Ctrl-C):
criu helpers (`criu page-server`, `criu lazy-pages`), zdtmpy's page server (a thread of this
process) and `zdtmpy stream` children. Every child gets `r.env()` (its process marker)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import spawnns
from ..criu import log_excerpt, returncode_text, signal_name
from ..errors import CriuFailure, StageTimeout
from . import Run, followed

if TYPE_CHECKING:
    from ..codec import Compression
    from ..transport.pageserver import PageServer


class Blamer(Protocol):
    """A background helper that can name itself as the cause of a failure that followed."""

    def blame(self, failure: Exception) -> None: ...


class CriuServer(Blamer, Protocol):
    """A listening criu helper: criu's page server as a command or over RPC."""

    def wait(self, timeout: float, stage: str) -> int: ...
    def kill(self) -> None: ...


LOOPBACK = "127.0.0.1"
PORT_ATTEMPTS = 5
BLAME_SETTLE = 2.0  # seconds a streamer gets to exit after criu failed


class BackgroundCriu:
    """`criu ACTION ARGS --status-fd` in its own session: ready once criu writes its status
    byte (after it listens), ended by wait() or, on any failure, by the Run's cleanup."""

    def __init__(self, r: Run, action: str, args: list[str], log_name: str) -> None:
        self.r = r
        self.action = action
        self.log = r.path(log_name)
        self.out = r.path(log_name + ".out")
        self.cmd = [str(r.criu.path), action, *args, "-o", str(self.log), "-v4"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> None:
        rfd, wfd = os.pipe()
        env = self.r.env()  # before spawning(): it reads our /proc
        try:
            with open(self.out, "ab") as out, spawnns.spawning():
                self.proc = subprocess.Popen(
                    [*self.cmd, "--status-fd", str(wfd)], stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, pass_fds=(wfd,),
                    start_new_session=True, env=env)
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
            assert self.proc is not None
            rc = self.proc.wait(timeout)
            raise CriuFailure(f"criu {self.action} exited with status {rc} before it was "
                              f"ready; command: {' '.join(self.cmd)}\n{log_excerpt(self.log)}")

    def wait(self, timeout: float, stage: str) -> int:
        assert self.proc is not None, "wait() before start()"
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
        return int(s.getsockname()[1])


def start_criu_server(r: Run, action: str, args: list[str],
                      log_name: str) -> tuple[CriuServer, int]:
    """Start a listening criu helper on a free port, retrying when another test took the port
    between our probe and criu's bind. Returns (BackgroundCriu, port)."""
    last: CriuFailure | None = None
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        name = log_name if attempt == 0 else f"{log_name}.{attempt}"
        full_args = [*args, "--address", LOOPBACK, "--port", str(port)]
        log = r.path(name)
        r.attach(f"criu {action} log ({name})", log)
        try:
            backend = r.backend
            if action == "page-server" and backend.name == "rpc":
                from ..criuapi.rpc import RpcBackend

                assert isinstance(backend, RpcBackend)  # the only backend named rpc
                server = backend.start_page_server(full_args, log=log, timeout=r.timeout(),
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
    assert last is not None
    raise last


def start_zdtmpy_server(r: Run, images: Path, spec: Compression | None, *,
                        lazy: bool) -> PageServer:
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


def page_server_args(port: int) -> list[str]:
    return ["--page-server", "--address", LOOPBACK, "--port", str(port)]



class StreamerProcess:
    """`zdtmpy stream capture|serve` as a child: ready when its socket appears."""

    def __init__(self, r: Run, action: str, args: list[str | Path], sock: Path,
                 log_name: str) -> None:
        self.r = r
        self.action = action
        self.sock = sock
        self.log = r.path(log_name)
        r.attach(f"zdtmpy stream {action} log ({log_name})", self.log)
        cmd = [sys.executable, "-m", "zdtmpy.cli", "stream", action, *map(str, args),
               "--accept-timeout", str(r.timeout()), "--idle-timeout", str(r.timeout())]
        from ..compress.pipeline import workers

        # the child codes blocks with this process's share of the cores
        env = {**r.env(), "ZDTMPY_THREADS": str(workers())}
        with open(self.log, "ab") as logf, spawnns.spawning():
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=logf, close_fds=True, start_new_session=True,
                                         env=env)
        r.on_cleanup(self.kill)

    def wait_ready(self) -> None:
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

    def wait_done(self) -> None:
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

    def tail(self, lines: int = 15) -> str:
        from ..criu import read_head_tail

        try:
            first, last, _ = read_head_tail(self.log, head=0, tail=64 << 10)
        except OSError:
            return f"(no log at {self.log})"
        return "\n".join((first + last)[-lines:])

    def kill(self) -> None:
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
