"""zdtmpy's page server: what `criu dump --page-server` and `criu lazy-pages --page-server`
talk to over TCP (FORMAT.md section 6; criu's page-xfer.c is the reference).

This module is the server: the listening socket, the thread, session lifecycle, readiness
and stop. The wire format is in pswire, reading a connection in psconn, receiving a dump
(written through PagemapWriter, compressed on the fly) in psdump, serving lazy pages in
pslazy. A dump session writes into a private staging directory and installs its files only
when the peer closed cleanly: a peer that misbehaves gets its connection closed and leaves
nothing behind.

Every header is validated before anything is allocated or written; every read has a timeout;
memory stays bounded whatever the peer sends.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from ..codec import OFF, Compression
from ..errors import PageServerError, ZdtmError
from ..images import messages
from ..images.imageset import INVENTORY
from .psconn import Conn
from .psdump import DumpSession, stamp_inventory, warm_up
from .pslazy import LazySession
from .pswire import (  # noqa: F401 - the public names of the page server
    ADD,
    ADD_F,
    ADD_F_COMPRESSED,
    CLOSE,
    COMMAND_NAMES,
    FORCE_CLOSE,
    GET,
    HOLE,
    OPEN,
    OPEN2,
    PAGES_ID_BASE,
    PARENT,
    TYPE_PID,
    TYPE_SHMEM,
    Header,
    HeaderLayout,
    encode_dst,
    header_size_for,
    pagemap_for,
)

if TYPE_CHECKING:
    from ..images.reader import PageReader

__all__ = [
    "ADD", "ADD_F", "ADD_F_COMPRESSED", "CLOSE", "FORCE_CLOSE", "GET", "HOLE", "OPEN",
    "OPEN2", "PARENT", "PageServer", "PageServerError", "SessionResult", "encode_dst",
    "header_size_for", "pagemap_for", "stamp_inventory", "HeaderLayout", "Header",
]

# a whole session (one dump or one lazy restore) ends within this many seconds
SESSION_TIMEOUT = 1800.0


@dataclass
class SessionResult:
    peer: str
    ok: bool
    error: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)   # (pagemap, pages) installed
    entries: int = 0
    payload_bytes: int = 0  # bytes of page payload received (dump) or pages served (lazy)
    commands: int = 0       # commands accepted; 0 on a failure: a stray connection
    seconds: float = 0.0


class Session(Protocol):
    """What PageServer._session drives: a DumpSession or a LazySession."""

    entries: int

    @property
    def payload_bytes(self) -> int: ...
    def handle(self, h: Header) -> bool: ...
    def closing(self) -> None: ...
    def closed(self) -> None: ...
    def commit(self) -> list[tuple[str, str]]: ...
    def release(self, ok: bool) -> None: ...
    def failure(self) -> BaseException | None: ...


class PageServer:
    """A TCP page server in a thread of this process.

    server = PageServer(images_dir, spec=Compression("page"), header_size=32)
    port = server.start()           # bound and listening: criu may connect now
    result = server.wait(timeout)   # first session's SessionResult (raises on failure)
    server.stop()

    lazy=True serves GET from `images_dir` instead of receiving a dump. `sessions` limits how
    many connections are served (None: until stop()).
    """

    def __init__(self, images_dir: str | os.PathLike[str], *, spec: Compression | None = None,
                 header_size: int = 32, address: str = "127.0.0.1", port: int = 0,
                 lazy: bool = False, timeout: float = 30.0, sessions: int | None = None,
                 log_path: str | os.PathLike[str] | None = None,
                 pagemap_nr_pages_field: bool | None = None,
                 session_timeout: float = SESSION_TIMEOUT) -> None:
        self.images_dir = Path(images_dir)
        self.session_timeout = session_timeout
        self.spec = spec or OFF
        self.layout = HeaderLayout(header_size)
        self.address = address
        self.port = port
        self.lazy = lazy
        self.timeout = timeout
        self.max_sessions = sessions
        self.log_path = Path(log_path) if log_path else None
        # criu 4.2 writes nr_pages in pagemap field 5; match what the peer's criu would write
        if pagemap_nr_pages_field is None:
            pagemap_nr_pages_field = header_size == 32
        self._template: messages.Message | None = None
        if pagemap_nr_pages_field:
            self._template = messages.PagemapEntry()
            self._template.nr_pages = 1
        self.results: list[SessionResult] = []
        self.ignored: list[SessionResult] = []  # stray connections (no valid command)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._active: socket.socket | None = None  # the connected socket of the running session
        self._logf: TextIO | None = None
        self._log_lock = threading.Lock()
        self._t0 = time.monotonic()

    # -- log ---------------------------------------------------------------------------
    def log(self, text: str) -> None:
        line = f"({time.monotonic() - self._t0:9.4f}) {text}\n"
        with self._log_lock:
            if self._logf is not None:
                try:
                    self._logf.write(line)
                    self._logf.flush()
                except OSError:  # a full disk must not end the server before its result
                    self._logf = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> int:
        if not self.images_dir.is_dir():
            raise PageServerError(f"page server: images directory {self.images_dir} does not "
                                  "exist")
        if not self.lazy:
            warm_up(self.spec)   # now, not while criu's dump waits for its first pages
        if self.log_path is not None:
            self._logf = open(self.log_path, "a")  # noqa: SIM115 - closed by stop()
        try:
            sock = socket.create_server((self.address, self.port), reuse_port=False)
        except OSError as exc:
            self._close_log()
            raise PageServerError(f"page server: cannot listen on {self.address}:{self.port}: "
                                  f"{exc.strerror or exc}") from None
        sock.settimeout(0.2)  # accept() wakes up to notice stop()
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        what = "lazy pages from" if self.lazy else "a dump into"
        self.log(f"listening on {self.address}:{self.port}, {self.layout.size}-byte headers, "
                 f"serving {what} {self.images_dir}, compression {self.spec}")
        self._thread = threading.Thread(target=self._serve, name=f"page-server-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, end a running session (its partial images are discarded)."""
        self._stop.set()
        active = self._active
        if active is not None:  # wake a session blocked in recv()
            try:
                active.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._close_log()

    def _close_log(self) -> None:
        with self._log_lock:
            if self._logf is not None:
                self._logf.close()
                self._logf = None

    def __enter__(self) -> PageServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout: float, index: int = 0) -> SessionResult:
        """The result of session `index` (0 = the first); PageServerError if it failed or did
        not end within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.results) <= index:
                left = deadline - time.monotonic()
                if left <= 0 or (self._thread is not None and not self._thread.is_alive()
                                 and len(self.results) <= index):
                    strays = ""
                    if self.ignored:  # e.g. a peer speaking the other header layout
                        strays = (f"; {len(self.ignored)} connection(s) failed before their "
                                  f"first command, the last: {self.ignored[-1].error}")
                    raise PageServerError(
                        f"page server on port {self.port}: session {index + 1} did not end "
                        f"within {timeout:g}s (see {self.log_path or 'its log'}){strays}")
                self._cond.wait(min(left, 0.5))
            result = self.results[index]
        if not result.ok:
            raise PageServerError(f"page server on port {self.port}: session with "
                                  f"{result.peer} failed: {result.error}")
        return result

    # -- the thread --------------------------------------------------------------------
    def _serve(self) -> None:
        served = 0
        listener = self._sock
        assert listener is not None  # start() made it before starting this thread
        while not self._stop.is_set():
            if self.max_sessions is not None and served >= self.max_sessions:
                break
            try:
                csock, addr = listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                self.log(f"accept failed: {exc}")
                break
            with csock:
                self._active = csock
                try:
                    result = self._session(csock, f"{addr[0]}:{addr[1]}")
                finally:
                    self._active = None
            if not result.ok and result.commands == 0:
                # a port scan or a stray client: not criu, so it neither uses up --sessions
                # nor becomes the result criu's session is judged by
                self.log(f"stray connection from {result.peer} ignored ({result.error}); "
                         "still waiting for criu")
                with self._cond:
                    self.ignored.append(result)
                    self._cond.notify_all()
                continue
            served += 1
            with self._cond:
                self.results.append(result)
                self._cond.notify_all()
        self.log("server stopped")

    def _session(self, csock: socket.socket, peer: str) -> SessionResult:
        """One connection, start to end. A session object (DumpSession or LazySession)
        handles the commands; closing() runs before CLOSE is answered, closed() after,
        commit() makes its work visible, release(ok) frees (or discards) it."""
        start = time.monotonic()
        self.log(f"session {len(self.results) + 1}: connection from {peer}")
        csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(csock, self.timeout, peer, self.session_timeout)
        result = SessionResult(peer, False)
        session: Session | None = None
        try:
            if self.lazy:
                session = LazySession(conn, self.layout, self._reader(), self.log)
            else:
                session = DumpSession(conn, self.layout, self.images_dir, self.spec,
                                      self._template, self.log)
            self._run(conn, session, peer)
            result.files = session.commit()
            if not self.lazy:
                self._stamp()
            result.ok = True
        except (ZdtmError, OSError) as exc:
            # work the session runs in the background failed first: that is the cause
            cause = session.failure() if session is not None else None
            result.error = str(cause or exc)
        except Exception as exc:  # noqa: BLE001 - a bug must end the session, not the server
            result.error = f"internal error: {exc!r}"
            self.log(traceback.format_exc())
        finally:
            if session is not None:
                result.entries, result.payload_bytes = session.entries, session.payload_bytes
                try:
                    session.release(result.ok)
                except Exception as exc:  # noqa: BLE001 - never hide the first error
                    if result.ok:
                        result.ok, result.error = False, f"releasing the session: {exc}"
                    else:
                        self.log(f"releasing the failed session: {exc}")
        result.seconds = time.monotonic() - start
        result.commands = conn.commands
        if result.ok:
            self.log(f"session over: {len(result.files)} pagemap(s), {result.entries} "
                     f"entries, {result.payload_bytes} payload bytes, {result.seconds:.3f}s")
        else:
            self.log(f"session FAILED, connection closed, nothing installed: {result.error}")
        return result

    def _stamp(self) -> None:
        """criu dump writes inventory.img before it sends CLOSE: when it shares our directory,
        mark the set compressed now (criu pre-dump writes it later: callers stamp again)."""
        if not self.spec.enabled:
            return
        if not (self.images_dir / INVENTORY).exists():
            self.log(f"no {INVENTORY} in {self.images_dir} yet: whoever merges the dump must "
                     "call stamp_inventory()")
            return
        if stamp_inventory(self.images_dir, self.spec):
            self.log(f"{INVENTORY} stamped: img_version 3, compress {self.spec.name}")

    def _reader(self) -> PageReader:
        from ..images.reader import PageReader

        return PageReader(self.images_dir)

    def _run(self, conn: Conn, session: Session, peer: str) -> None:
        hint = self.layout.mismatch_hint()
        header = bytearray(self.layout.size)
        while True:
            if self._stop.is_set():
                raise PageServerError(f"peer {peer}: server stopped during the session")
            if not conn.recv_into(header, len(header), "a command header", eof_ok=True,
                                  hint=hint):
                raise PageServerError(f"peer {peer}: connection closed without CLOSE")
            h = self.layout.unpack(header)
            self.log(f"<- {h}")
            done = session.handle(h)
            conn.commands += 1
            if done:
                break
        # Status 0 = "all data received" (criu's meaning): every payload byte is in the
        # writer's files by now; the fsync of closed() need not hold the dump up.
        session.closing()
        try:
            conn.send(struct.pack("=i", 0), "CLOSE reply")
        except PageServerError:
            if h.command != FORCE_CLOSE:
                raise
        session.closed()
        if h.command == CLOSE:
            # criu's server waits for the peer to hang up; anything else is a broken peer
            extra = conn.recv_exact(1, "the end of the connection after CLOSE", eof_ok=True)
            if extra is not None:
                raise PageServerError(f"peer {peer}: unexpected data after CLOSE "
                                      f"(byte {extra[0]:#04x})")
