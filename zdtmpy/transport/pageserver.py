"""zdtmpy's page server: what `criu dump --page-server` and `criu lazy-pages --page-server`
talk to over TCP (FORMAT.md section 6; criu's page-xfer.c is the reference).

Receiving a dump, pagemaps and pages are written through `PagemapWriter`, compressed on the
fly as the spec asks. A session writes into a private staging directory and installs its
files into the images directory only when the peer closed cleanly: a peer that misbehaves
gets its connection closed and leaves nothing behind. Serving lazy pages, GET requests are
answered from an image directory (any format, with parents) through `PageReader`.

Every header is validated before anything is allocated or written; every read has a timeout;
memory stays bounded whatever the peer sends.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import struct
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..compress.codec import CompressionSpec
from ..compress.pipeline import chunk_size
from ..compress.writer import PagemapWriter
from ..errors import ImageError, ZdtmError
from ..images import messages
from ..images.framing import INVENTORY_MAGIC, read_image, write_image
from ..images.imageset import INVENTORY, PARENT_LINK
from ..images.pagemap import PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT

# Commands (low 16 bits of `cmd`); page flags travel in the high 16 bits (ADD_F* only).
ADD, HOLE, OPEN, OPEN2, PARENT, ADD_F, GET, ADD_F_COMPRESSED = range(1, 9)
CLOSE, FORCE_CLOSE = 0x1023, 0x1024
COMMAND_NAMES = {ADD: "ADD", HOLE: "HOLE", OPEN: "OPEN", OPEN2: "OPEN2", PARENT: "PARENT",
                 ADD_F: "ADD_F", GET: "GET", ADD_F_COMPRESSED: "ADD_F_COMPRESSED",
                 CLOSE: "CLOSE", FORCE_CLOSE: "FORCE_CLOSE"}
TYPE_PID, TYPE_SHMEM = 1, 2
PAGES_ID_BASE = 0x10000  # criu's page server: pages ids 1 + 0x10000, 2 + 0x10000, ...
WIRE_FLAGS = PE_PARENT | PE_LAZY | PE_PRESENT

# Limits. Real criu sends at most one page-pipe buffer per ADD_F (~1000 pages); these are far
# above that and only keep a hostile peer from exhausting disk or memory.
MAX_PAYLOAD_PAGES = 1 << 20      # 4 GiB of payload in one entry (streamed, not buffered)
MAX_COMPRESSED_PAGES = 1 << 14   # ADD_F_COMPRESSED is buffered per entry: <= 64 MiB
MAX_GET_PAGES = 1024             # pages answered per GET (criu accepts fewer than asked)
ADDR_LIMIT = 1 << 57             # no user address space reaches this (5-level paging: 2^56)


class PageServerError(ZdtmError):
    """A page-server session failed: names the peer, the command and what was expected."""


@dataclass(frozen=True)
class Header:
    command: int
    flags: int
    nr_pages: int
    vaddr: int
    dst_id: int

    @property
    def name(self):
        return COMMAND_NAMES.get(self.command, f"command {self.command:#x}")

    def __str__(self):
        return (f"{self.name} flags={self.flags:#x} nr_pages={self.nr_pages} "
                f"vaddr={self.vaddr:#x} dst_id={self.dst_id:#x}")


class Layout:
    """Header layout: 24 bytes (criu <= 4.1, u32 nr_pages) or 32 bytes (4.2+, u64 nr_pages
    after 4 bytes of padding). Host byte order, as criu sends its struct as is."""

    def __init__(self, size):
        if size == 24:
            self._s = struct.Struct("=IIQQ")
        elif size == 32:
            self._s = struct.Struct("=IIQQQ")
        else:
            raise PageServerError(f"page-server header size must be 24 or 32, not {size}")
        self.size = size

    def unpack(self, data):
        if self.size == 24:
            cmd, nr, vaddr, dst = self._s.unpack(data)
        else:
            cmd, _pad, nr, vaddr, dst = self._s.unpack(data)
        return Header(cmd & 0xFFFF, cmd >> 16, nr, vaddr, dst)

    def pack(self, command, flags, nr_pages, vaddr, dst_id):
        cmd = (flags << 16) | command
        if self.size == 24:
            return self._s.pack(cmd, nr_pages, vaddr, dst_id)
        return self._s.pack(cmd, 0, nr_pages, vaddr, dst_id)


def header_size_for(version) -> int:
    """The header criu `version` (a tuple) speaks: u64 nr_pages from 4.2 on."""
    return 32 if tuple(version) >= (4, 2) else 24


def pagemap_for(dst_id) -> str:
    """dst_id = id << 8 | type -> the pagemap file it names."""
    kind, ident = dst_id & 0xFF, dst_id >> 8
    if kind == TYPE_PID:
        if not 0 < ident < 1 << 32:
            raise PageServerError(f"dst_id {dst_id:#x}: pid {ident} out of range")
        return f"pagemap-{ident}.img"
    if kind == TYPE_SHMEM:
        return f"pagemap-shmem-{ident}.img"
    raise PageServerError(f"dst_id {dst_id:#x}: unknown pagemap type {kind} "
                          f"(expected {TYPE_PID} pid or {TYPE_SHMEM} shmem)")


def encode_dst(name_or_pid, shmem=False) -> int:
    return (int(name_or_pid) << 8) | (TYPE_SHMEM if shmem else TYPE_PID)


# -- one connection ----------------------------------------------------------------------

class Conn:
    """A connected socket whose every read has a timeout and names what it waited for."""

    def __init__(self, sock, timeout, peer):
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        sock.settimeout(timeout)
        self.received = 0

    def recv_exact(self, n, what, eof_ok=False, hint=""):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except socket.timeout:
                raise PageServerError(f"peer {self.peer}: nothing received for "
                                      f"{self.timeout:g}s while waiting for {what}"
                                      f"{hint if got else ''}") from None
            except OSError as exc:
                raise PageServerError(f"peer {self.peer}: {exc.strerror or exc} while "
                                      f"reading {what}") from None
            if k == 0:
                if got == 0 and eof_ok:
                    return None
                raise PageServerError(f"peer {self.peer}: connection closed after {got} of "
                                      f"{n} bytes of {what}{hint}")
            got += k
        self.received += n
        return buf

    def send(self, data, what):
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise PageServerError(f"peer {self.peer}: cannot send {what}: "
                                  f"{exc.strerror or exc}") from None


# -- receiving a dump --------------------------------------------------------------------

class _Cancelled(Exception):
    pass


class WriteBehind:
    """Runs the writer's calls in one thread, in order, while the session thread keeps reading
    the socket, so receiving overlaps compression. At most QUEUE_ITEMS items (payload chunks
    of <= 4 MiB) wait in between: memory stays bounded."""

    QUEUE_ITEMS = 16
    _STOP = object()

    def __init__(self, on_error=None):
        self._on_error = on_error  # wakes the session thread, which may be blocked in recv
        self._q = queue.Queue(maxsize=self.QUEUE_ITEMS)
        self.error = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="page-server-writer",
                                        daemon=True)
        self._thread.start()

    def call(self, fn, *args):
        self._put(("call", fn, args))

    def stream(self, fn, chunks):
        """fn(iterator) is called behind with the payload chunks put() right after."""
        self._put(("stream", fn, chunks))

    def chunk(self, data):
        self._put(("chunk", data))

    def drain(self):
        """Wait until everything queued ran; re-raise the first error it met."""
        self._put(self._STOP)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self):
        self._cancel.set()
        self._thread.join()

    def _put(self, item):
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise PageServerError("page server: the writer thread died") from None

    def _get(self):
        while True:
            if self._cancel.is_set():
                raise _Cancelled
            try:
                return self._q.get(timeout=0.2)
            except queue.Empty:
                continue

    def _chunks(self, n):
        for _ in range(n):
            item = self._get()
            if item is self._STOP or item[0] != "chunk":
                raise PageServerError("page server: payload chunks missing (internal error)")
            yield item[1]

    def _loop(self):
        try:
            while True:
                item = self._get()
                if item is self._STOP:
                    return
                if self.error is not None:
                    continue  # failed: only wait for STOP or cancel
                try:
                    if item[0] == "call":
                        item[1](*item[2])
                    elif item[0] == "stream":
                        item[1](self._chunks(item[2]))
                except _Cancelled:
                    raise
                except (ZdtmError, OSError) as exc:
                    self.error = exc if isinstance(exc, ZdtmError) else \
                        PageServerError(f"page server: writing images: {exc}")
                except Exception as exc:  # noqa: BLE001 - reported by the session thread
                    self.error = PageServerError(f"page server: internal error while "
                                                 f"writing: {exc!r}")
                if self.error is not None and self._on_error is not None:
                    self._on_error()
        except _Cancelled:
            return


class DumpSession:
    """One dump session: pagemaps written into a staging directory, installed on CLOSE."""

    def __init__(self, conn, layout, images_dir, spec, header_template, log):
        self.conn = conn
        self.layout = layout
        self.dir = Path(images_dir)
        self.spec = spec
        self.log = log
        self._template = header_template
        self.stage = Path(tempfile.mkdtemp(prefix=".zdtmpy-ps-", dir=self.dir))
        self.writer = None
        self.dst_id = None
        self.opened = set()
        self.next_pages_id = PAGES_ID_BASE + 1
        self.written = []   # (pagemap name, pages name) installed by close
        self.entries = 0
        self.payload = 0
        self.behind = WriteBehind(self._wake)  # the writer is only touched from its thread

    # lifecycle
    def abort(self):
        self.behind.cancel()
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        shutil.rmtree(self.stage, ignore_errors=True)

    def install(self):
        """Move the staged files into the images directory (pages first: a pagemap never
        appears before its pages file)."""
        names = sorted(os.listdir(self.stage), key=lambda n: not n.startswith("pages-"))
        for name in names:
            os.replace(self.stage / name, self.dir / name)
        _fsync_dir(self.dir)
        os.rmdir(self.stage)

    def finish(self):
        """After CLOSE: flush and close the last pagemap (into the staging directory)."""
        self.behind.call(self._finish_writer)
        self.behind.drain()

    def received(self):
        """Every queued write done (CLOSE is answered only then, as criu's server does)."""
        self.behind.drain()
        self.behind = WriteBehind(self._wake)

    def _wake(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _finish_writer(self):
        if self.writer is not None:
            self.writer.close()
            self.written.append((self.writer.pagemap_name, self.writer.pages_name))
            self.writer = None

    # commands
    def handle(self, h):
        """Process one command; returns True when the session is over."""
        if h.command in (OPEN, OPEN2):
            self._no_flags(h)
            self._open(h)
            if h.command == OPEN2:
                self.conn.send(bytes([self._has_parent(h.dst_id)]), "OPEN2 reply")
        elif h.command == PARENT:
            self._no_flags(h)
            self.conn.send(struct.pack("=i", self._has_parent(h.dst_id)), "PARENT reply")
        elif h.command in (ADD, HOLE, ADD_F):
            if h.command != ADD_F:
                self._no_flags(h)
            flags = {ADD: PE_PRESENT, HOLE: PE_PARENT}.get(h.command, h.flags)
            self._add(h, flags)
        elif h.command == ADD_F_COMPRESSED:
            self._add_compressed(h)
        elif h.command in (CLOSE, FORCE_CLOSE):
            self._no_flags(h)
            return True
        elif h.command == GET:
            raise PageServerError(f"{h}: this server receives a dump; GET is for a server "
                                  "started to serve lazy pages")
        else:
            raise PageServerError(f"unknown command {h.command:#x} (header {h})")
        return False

    def _no_flags(self, h):
        if h.flags:
            raise PageServerError(f"{h}: flags are only valid with ADD_F, got {h.flags:#x}")

    def _open(self, h):
        name = pagemap_for(h.dst_id)
        if h.dst_id in self.opened:
            raise PageServerError(f"{h}: {name} was already opened in this session")
        pages_id = self.next_pages_id
        self.next_pages_id += 1
        self.behind.call(self._open_writer, name, pages_id)
        self.dst_id = h.dst_id
        self.opened.add(h.dst_id)
        self.log(f"open {name} -> pages-{pages_id}.img")

    def _open_writer(self, name, pages_id):
        self._finish_writer()
        self.writer = PagemapWriter(self.stage, name, pages_id, self.spec)

    def _has_parent(self, dst_id):
        name = pagemap_for(dst_id)
        return int(os.path.exists(self.dir / PARENT_LINK / name))

    def _check_entry(self, h, flags):
        if h.dst_id != self.dst_id:
            raise PageServerError(f"{h}: dst_id {h.dst_id:#x} is not the open pagemap "
                                  f"(open: {self.dst_id:#x})" if self.dst_id is not None else
                                  f"{h}: dst_id {h.dst_id:#x} was not opened (OPEN2 first)")
        if flags & ~WIRE_FLAGS:
            raise PageServerError(f"{h}: unknown page flags {flags & ~WIRE_FLAGS:#x} "
                                  "(expected PE_PARENT|PE_LAZY|PE_PRESENT)")
        if flags & PE_PRESENT and flags & PE_PARENT:
            raise PageServerError(f"{h}: PE_PRESENT and PE_PARENT together")
        if h.nr_pages == 0:
            raise PageServerError(f"{h}: nr_pages is 0")
        if h.vaddr % PAGE_SIZE:
            raise PageServerError(f"{h}: vaddr is not page aligned")
        if h.vaddr + h.nr_pages * PAGE_SIZE > ADDR_LIMIT:
            raise PageServerError(f"{h}: range ends beyond any user address space")

    def _template_for(self, flags):
        if self._template is None:
            return None
        t = messages.PagemapEntry()
        t.CopyFrom(self._template)
        t.flags = flags  # criu always writes the flags field
        return t

    def _add(self, h, flags):
        self._check_entry(h, flags)
        if flags & PE_PRESENT:
            if h.nr_pages > MAX_PAYLOAD_PAGES:
                raise PageServerError(f"{h}: {h.nr_pages} pages in one entry is over this "
                                      f"server's limit of {MAX_PAYLOAD_PAGES}")
        template = self._template_for(flags)
        if not flags & PE_PRESENT:
            self.behind.call(lambda: self.writer.add(h.vaddr, h.nr_pages, flags, b"",
                                                     template=template))
            self.entries += 1
            return
        total = h.nr_pages * PAGE_SIZE
        step = chunk_size(self.spec.block_pages * PAGE_SIZE)  # what the writer works on
        self.behind.stream(lambda chunks: self.writer.add(h.vaddr, h.nr_pages, flags, chunks,
                                                          template=template),
                           -(-total // step))
        left = total
        while left:
            n = min(step, left)
            self.behind.chunk(self.conn.recv_exact(
                n, f"payload of {h} ({total - left} of {total} bytes in)"))
            left -= n
        self.entries += 1
        self.payload += total

    def _add_compressed(self, h):
        flags = h.flags
        self._check_entry(h, flags)
        if not flags & PE_PRESENT:
            raise PageServerError(f"{h}: ADD_F_COMPRESSED without PE_PRESENT")
        if h.nr_pages > MAX_COMPRESSED_PAGES:
            raise PageServerError(f"{h}: {h.nr_pages} compressed pages in one entry is over "
                                  f"this server's limit of {MAX_COMPRESSED_PAGES}")
        sizes, blob = [], bytearray()
        for i in range(h.nr_pages):
            (size,) = struct.unpack("=I", self.conn.recv_exact(4, f"{h}: size of page {i}"))
            if size > PAGE_SIZE:
                raise PageServerError(f"{h}: page {i}: block size {size} is over a page "
                                      f"({PAGE_SIZE})")
            sizes.append(size)
            if size:
                blob += self.conn.recv_exact(size, f"{h}: block of page {i}")
        self.behind.call(lambda: self.writer.add_compressed(h.vaddr, h.nr_pages, flags, sizes,
                                                            bytes(blob)))
        self.entries += 1
        self.payload += len(blob)


# -- serving lazy pages ------------------------------------------------------------------

class LazySession:
    """Answers GET {nr_pages, vaddr, dst_id = pid} with ADD_F|PE_PRESENT and raw pages."""

    def __init__(self, conn, layout, reader, log):
        self.conn = conn
        self.layout = layout
        self.reader = reader
        self.log = log
        self.served = 0

    def handle(self, h):
        if h.command == GET:
            self._get(h)
            return False
        if h.command in (CLOSE, FORCE_CLOSE):
            if h.flags:
                raise PageServerError(f"{h}: flags are only valid with ADD_F")
            return True
        if h.command in COMMAND_NAMES:
            raise PageServerError(f"{h}: this server serves lazy pages; it accepts only GET "
                                  "and CLOSE")
        raise PageServerError(f"unknown command {h.command:#x} (header {h})")

    def _get(self, h):
        if h.flags:
            raise PageServerError(f"{h}: GET carries no flags")
        if h.nr_pages == 0 or h.vaddr % PAGE_SIZE or h.vaddr + h.nr_pages * PAGE_SIZE > ADDR_LIMIT:
            raise PageServerError(f"{h}: expected a positive page count at a page-aligned "
                                  "user address")
        pid = h.dst_id  # lazy-pages sends the bare pid here, not a type-encoded dst_id
        n = self._servable(pid, h.vaddr, min(h.nr_pages, MAX_GET_PAGES))
        if n == 0:
            # criu's own server drops the session here; an empty answer lets criu report it
            self.log(f"GET pid {pid} {h.vaddr:#x}: no dumped page there; answering 0 pages")
            self.conn.send(self.layout.pack(ADD_F, PE_PRESENT, 0, h.vaddr, h.dst_id),
                           "GET reply")
            return
        try:
            data = self.reader.read(pid, h.vaddr, n)
        except ImageError as exc:
            raise PageServerError(f"{h}: cannot read the pages: {exc}") from None
        self.conn.send(self.layout.pack(ADD_F, PE_PRESENT, n, h.vaddr, h.dst_id) + data,
                       "GET reply")
        self.served += n

    def _servable(self, pid, vaddr, want):
        """How many pages from vaddr (at most `want`) the top layer's entries cover without a
        gap and hold in the images (present, or in a parent)."""
        pm = self.reader.layers[0].pagemaps.get(pid)
        if pm is None:
            return 0
        pos, end = vaddr, vaddr + want * PAGE_SIZE
        while pos < end:
            e = pm.find(pos)
            if e is None or not e.flags & (PE_PRESENT | PE_PARENT):
                break
            pos = e.end
        return (min(pos, end) - vaddr) // PAGE_SIZE


# -- the server ----------------------------------------------------------------------------

@dataclass
class SessionResult:
    peer: str
    ok: bool
    error: str | None = None
    files: list = field(default_factory=list)   # (pagemap, pages) installed
    entries: int = 0
    payload_bytes: int = 0  # bytes of page payload received (dump) or pages served (lazy)
    seconds: float = 0.0


class PageServer:
    """A TCP page server in a thread of this process.

    server = PageServer(images_dir, spec=CompressionSpec("page"), header_size=32)
    port = server.start()           # bound and listening: criu may connect now
    result = server.wait(timeout)   # first session's SessionResult (raises on failure)
    server.stop()

    lazy=True serves GET from `images_dir` instead of receiving a dump. `sessions` limits how
    many connections are served (None: until stop()).
    """

    def __init__(self, images_dir, *, spec=None, header_size=32, address="127.0.0.1",
                 port=0, lazy=False, timeout=30.0, sessions=None, log_path=None,
                 pagemap_nr_pages_field=None):
        self.images_dir = Path(images_dir)
        self.spec = spec or CompressionSpec("off")
        self.layout = Layout(header_size)
        self.address = address
        self.port = port
        self.lazy = lazy
        self.timeout = timeout
        self.max_sessions = sessions
        self.log_path = Path(log_path) if log_path else None
        # criu 4.2 writes nr_pages in pagemap field 5; match what the peer's criu would write
        if pagemap_nr_pages_field is None:
            pagemap_nr_pages_field = header_size == 32
        self._template = None
        if pagemap_nr_pages_field:
            self._template = messages.PagemapEntry()
            self._template.nr_pages = 1
        self.results = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sock = None
        self._thread = None
        self._active = None  # the connected socket of the running session
        self._logf = None
        self._log_lock = threading.Lock()
        self._t0 = time.monotonic()

    # -- log ---------------------------------------------------------------------------
    def log(self, text):
        line = f"({time.monotonic() - self._t0:9.4f}) {text}\n"
        with self._log_lock:
            if self._logf is not None:
                self._logf.write(line)
                self._logf.flush()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> int:
        if not self.images_dir.is_dir():
            raise PageServerError(f"page server: images directory {self.images_dir} does not "
                                  "exist")
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
        self.port = sock.getsockname()[1]
        what = "lazy pages from" if self.lazy else "a dump into"
        self.log(f"listening on {self.address}:{self.port}, {self.layout.size}-byte headers, "
                 f"serving {what} {self.images_dir}, compression {self.spec}")
        self._thread = threading.Thread(target=self._serve, name=f"page-server-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self, timeout=10.0):
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

    def _close_log(self):
        with self._log_lock:
            if self._logf is not None:
                self._logf.close()
                self._logf = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def wait(self, timeout, index=0) -> SessionResult:
        """The result of session `index` (0 = the first); PageServerError if it failed or did
        not end within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.results) <= index:
                left = deadline - time.monotonic()
                if left <= 0 or (self._thread is not None and not self._thread.is_alive()
                                 and len(self.results) <= index):
                    raise PageServerError(
                        f"page server on port {self.port}: session {index + 1} did not end "
                        f"within {timeout:g}s (see {self.log_path or 'its log'})")
                self._cond.wait(min(left, 0.5))
            result = self.results[index]
        if not result.ok:
            raise PageServerError(f"page server on port {self.port}: session with "
                                  f"{result.peer} failed: {result.error}")
        return result

    # -- the thread --------------------------------------------------------------------
    def _serve(self):
        served = 0
        while not self._stop.is_set():
            if self.max_sessions is not None and served >= self.max_sessions:
                break
            try:
                csock, addr = self._sock.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                self.log(f"accept failed: {exc}")
                break
            served += 1
            with csock:
                self._active = csock
                try:
                    result = self._session(csock, f"{addr[0]}:{addr[1]}")
                finally:
                    self._active = None
            with self._cond:
                self.results.append(result)
                self._cond.notify_all()
        self.log("server stopped")

    def _session(self, csock, peer):
        start = time.monotonic()
        self.log(f"session {len(self.results) + 1}: connection from {peer}")
        csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(csock, self.timeout, peer)
        result = SessionResult(peer, False)
        session = None
        try:
            if self.lazy:
                session = LazySession(conn, self.layout, self._reader(), self.log)
            else:
                session = DumpSession(conn, self.layout, self.images_dir, self.spec,
                                      self._template, self.log)
            self._run(conn, session, peer)
            if not self.lazy:
                session.install()
                result.files = session.written
                self._stamp()
            result.ok = True
        except (ZdtmError, OSError) as exc:
            behind = getattr(session, "behind", None)
            # a writer error woke us by closing the socket: it is the real cause
            result.error = str(behind.error if behind and behind.error else exc)
        except Exception as exc:  # noqa: BLE001 - a bug must end the session, not the server
            result.error = f"internal error: {exc!r}"
            self.log(traceback.format_exc())
        finally:
            if isinstance(session, DumpSession):
                result.entries, result.payload_bytes = session.entries, session.payload
                if not result.ok:
                    session.abort()
            elif isinstance(session, LazySession):
                result.payload_bytes = session.served * PAGE_SIZE
                session.reader.close()
        result.seconds = time.monotonic() - start
        if result.ok:
            self.log(f"session over: {len(result.files)} pagemap(s), {result.entries} "
                     f"entries, {result.payload_bytes} payload bytes, {result.seconds:.3f}s")
        else:
            self.log(f"session FAILED, connection closed, nothing installed: {result.error}")
        return result

    def _stamp(self):
        """criu dump writes inventory.img before it sends CLOSE: when it shares our directory,
        mark the set compressed now (criu pre-dump writes it later: callers stamp again)."""
        if self.spec.mode == "off":
            return
        if not (self.images_dir / INVENTORY).exists():
            self.log(f"no {INVENTORY} in {self.images_dir} yet: whoever merges the dump must "
                     "call stamp_inventory()")
            return
        if stamp_inventory(self.images_dir, self.spec):
            self.log(f"{INVENTORY} stamped: img_version 3, compress {self.spec.mode}")

    @property
    def _layout_hint(self):
        other = 24 if self.layout.size == 32 else 32
        who = "criu <= 4.1" if other == 24 else "criu >= 4.2"
        return f" (is the peer {who}, which sends {other}-byte headers?)"

    def _reader(self):
        from ..images.reader import PageReader

        return PageReader(self.images_dir)

    def _run(self, conn, session, peer):
        while True:
            if self._stop.is_set():
                raise PageServerError(f"peer {peer}: server stopped during the session")
            raw = conn.recv_exact(self.layout.size, "a command header", eof_ok=True,
                                  hint=self._layout_hint)
            if raw is None:
                raise PageServerError(f"peer {peer}: connection closed without CLOSE")
            h = self.layout.unpack(bytes(raw))
            self.log(f"<- {h}")
            if session.handle(h):
                break
        # Status 0 = "all data received" (criu's meaning): every payload byte is in the
        # writer's files by now; the fsync of close() need not hold the dump up.
        if isinstance(session, DumpSession):
            session.received()
        try:
            conn.send(struct.pack("=i", 0), "CLOSE reply")
        except PageServerError:
            if h.command != FORCE_CLOSE:
                raise
        if isinstance(session, DumpSession):
            session.finish()
        if h.command == CLOSE:
            # criu's server waits for the peer to hang up; anything else is a broken peer
            extra = conn.recv_exact(1, "the end of the connection after CLOSE", eof_ok=True)
            if extra is not None:
                raise PageServerError(f"peer {peer}: unexpected data after CLOSE "
                                      f"(byte {extra[0]:#04x})")


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- after the dump ------------------------------------------------------------------------

def stamp_inventory(images_dir, spec) -> bool:
    """Mark a set written by a non-compressing criu plus this server as compressed: img_version
    3, compress mode (field 15) and region size (field 16). Atomic (temp file + rename).
    Returns False when nothing needed changing (spec off, or already stamped the same way)."""
    if spec.mode == "off":
        return False
    path = Path(images_dir) / INVENTORY
    raw = read_image(path, INVENTORY_MAGIC)
    if len(raw.entries) != 1:
        raise ImageError(f"{path}: expected 1 inventory entry, found {len(raw.entries)}")
    inv = messages.decode(messages.InventoryEntry, raw.entries[0], str(path))
    new = messages.InventoryEntry()
    new.CopyFrom(inv)  # keep every field we do not name
    if new.img_version not in (2, 3):
        raise ImageError(f"{path}: img_version {new.img_version}: expected 2 (criu's) or 3")
    new.img_version = 3
    new.compress = spec.inventory_mode
    if spec.mode == "region":
        new.compress_region_size = spec.region_size
    else:
        new.ClearField("compress_region_size")
    if new == inv:
        return False
    tmp = path.with_name(f".{INVENTORY}.stamp")
    write_image(tmp, INVENTORY_MAGIC, [new], fsync=True)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return True
