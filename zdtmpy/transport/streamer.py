"""zdtmpy's image streamer for `criu --stream`: capture (dump side) and serve (restore side).

Protocol (CRIU's img-streamer.c): criu connects to a UNIX stream socket in the images dir
(`streamer-capture.sock` on dump, `streamer-serve.sock` on restore). For every image file it
sends `u32 length + img_streamer_request_entry{filename}`; on restore the streamer answers
`u32 length + img_streamer_reply_entry{exists}`; then criu passes one end of a fresh pipe
with SCM_RIGHTS (one dummy data byte) and writes (dump) or reads (restore) the file through
it. Several files are open at once and written interleaved (a pagemap and its pages file in
particular), so capture reads every pipe from one event loop and never blocks on one of them.

Capture compresses pages on the fly. criu sends a pages file before the pagemap that
describes it (the pagemap sits in criu's 4 KiB write buffer until it fills or closes), so
waiting for entries would mean holding the whole dump: instead each pages file is cut into
blocks on its own grid (one page or one region) and every block stored zero / raw / LZ4 as
CRIU does, in a thread pool while criu keeps writing. Memory stays at a few chunks per
pages file. Other files pass through unchanged. Serve decodes the blocks while feeding criu.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import os
import re
import select
import selectors
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StageTimeout, ZdtmError
from .streamformat import (
    StreamWriter,
    check_name,
    index_stream,
    iter_file,
)

CAPTURE_SOCKET = "streamer-capture.sock"
SERVE_SOCKET = "streamer-serve.sock"
PIPE_READ = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MEM_LIMIT = 64 << 20  # pages buffered in memory before spilling to a temporary file
_U32 = struct.Struct("<I")

_PROTO = """
syntax = "proto2";
package zdtmpy.streamer;
message img_streamer_request_entry { required string filename = 1; }
message img_streamer_reply_entry { required bool exists = 1; }
"""

# Image files that are nothing but magic + framed entries: a cut inside an entry is caught.
_FRAMED = re.compile(r"(core|mm|pagemap|ids|fs|fdinfo)-.*\.img|"
                     r"(pstree|inventory|files|seccomp)\.img")
_PAGES = re.compile(r"pages-(\d+)\.img")
_PAGEMAP = re.compile(r"pagemap-(?:shmem-)?\d+\.img")


class StreamerError(ZdtmError):
    """The image streamer failed: names the side, the file and what was expected."""


@functools.cache
def _messages():
    from ..images.protoparse import load_messages

    return load_messages({"img-streamer.proto": _PROTO})


def now():
    return time.monotonic()


# -- socket and protocol helpers -------------------------------------------------------------

def listen(images_dir, name):
    """Listen on images_dir/name, owner-only. The socket is bound under a temporary name,
    chmod'ed, put in listen state and only then renamed into place: its appearance is the
    readiness signal (criu can never connect too early or to a world-writable socket)."""
    images_dir = Path(images_dir)
    final = images_dir / name
    tmp = images_dir / f".zs{os.getpid()}-{threading.get_ident() % 1000}"  # not longer than final
    for p in (final, tmp):
        if len(os.fsencode(p)) >= 108:
            raise StreamerError(f"socket path {p} is too long for AF_UNIX (max 107 bytes); "
                                "use a shorter images directory")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if final.exists() or final.is_symlink():
        raise StreamerError(f"{final} already exists: another streamer is running here, or a "
                            "stale socket was left behind (remove it)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        sock.listen(1)
        os.rename(tmp, final)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise StreamerError(f"cannot listen on {final}: {exc.strerror}") from None
    finally:
        os.umask(old)
    return sock, final


def accept(sock, path, timeout):
    sock.settimeout(timeout)
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        raise StageTimeout(f"{path}: criu did not connect within {timeout:.0f}s") from None
    conn.settimeout(None)
    return conn


class Control:
    """criu's control connection: framed requests, replies, and pipe ends by SCM_RIGHTS."""

    def __init__(self, conn, where, timeout):
        self.conn = conn
        self.where = where
        self.timeout = timeout

    def _recv_exact(self, n, what, eof_ok=False):
        buf = bytearray()
        self.conn.settimeout(self.timeout)
        while len(buf) < n:
            try:
                more = self.conn.recv(n - len(buf))
            except TimeoutError:
                raise StageTimeout(f"{self.where}: criu sent no {what} within "
                                   f"{self.timeout:.0f}s") from None
            except OSError as exc:
                raise StreamerError(f"{self.where}: reading {what}: {exc.strerror}") from None
            if not more:
                if eof_ok and not buf:
                    return None
                raise StreamerError(f"{self.where}: criu disconnected in the middle of a "
                                    f"{what} ({len(buf)} of {n} bytes)")
            buf += more
        return bytes(buf)

    def request(self):
        """The next requested file name, or None when criu closed the connection."""
        head = self._recv_exact(4, "request", eof_ok=True)
        if head is None:
            return None
        (n,) = _U32.unpack(head)
        if n > 4096:
            raise StreamerError(f"{self.where}: request of {n} bytes (expected a small "
                                "img_streamer_request_entry)")
        msg = _messages()["img_streamer_request_entry"]()
        try:
            msg.ParseFromString(self._recv_exact(n, "request"))
        except Exception as exc:  # protobuf raises its own DecodeError
            raise StreamerError(f"{self.where}: bad img_streamer_request_entry: {exc}") from None
        if not msg.IsInitialized():
            raise StreamerError(f"{self.where}: img_streamer_request_entry without a filename")
        return msg.filename

    def reply(self, exists):
        msg = _messages()["img_streamer_reply_entry"](exists=exists)
        data = msg.SerializeToString()
        self.conn.settimeout(self.timeout)
        try:
            self.conn.sendall(_U32.pack(len(data)) + data)
        except OSError as exc:
            raise StreamerError(f"{self.where}: cannot answer criu: "
                                f"{exc.strerror or exc}") from None

    def recv_fd(self, name):
        """The pipe end criu passes for `name` (one dummy byte carrying SCM_RIGHTS)."""
        self.conn.settimeout(self.timeout)
        try:
            data, anc, flags, _ = self.conn.recvmsg(1, socket.CMSG_SPACE(4 * 4))
        except TimeoutError:
            raise StageTimeout(f"{self.where}: criu passed no pipe for {name} within "
                               f"{self.timeout:.0f}s") from None
        fds = []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        for extra in fds[1:]:
            os.close(extra)
        if not data:
            if fds:
                os.close(fds[0])
            raise StreamerError(f"{self.where}: criu disconnected before passing the pipe "
                                f"for {name}")
        if not fds or flags & socket.MSG_CTRUNC:
            if fds:
                os.close(fds[0])
            raise StreamerError(f"{self.where}: criu's message for {name} carried no pipe "
                                "(expected one fd by SCM_RIGHTS)")
        return fds[0]


def tune_malloc():
    """Keep 1 MiB buffers on the heap: with glibc's default, each one is a fresh mmap whose
    pages fault in and are unmapped again, which doubled capture's system time (measured)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 64 << 20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 64 << 20)   # M_TOP_PAD
    except (OSError, AttributeError):
        pass  # not glibc: slower, same result


def _enlarge_pipe(fd):
    with contextlib.suppress(OSError):  # up to fs.pipe-max-size; fewer wakeups if it works
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_READ)


class FramingCheck:
    """Follows the `u32 length + entry` framing of an image without keeping it, so a file
    cut inside an entry (criu gone mid-file) is an error and not a short image."""

    def __init__(self, name):
        self.name = name
        self.skip = 4 if name == "inventory.img" else 8  # the magic(s)
        self.hdr = b""
        self.entries = 0

    def feed(self, data):
        mv = memoryview(data)
        while mv:
            if self.skip:
                k = min(self.skip, len(mv))
                self.skip -= k
                mv = mv[k:]
                continue
            need = 4 - len(self.hdr)
            self.hdr += bytes(mv[:need])
            mv = mv[need:]
            if len(self.hdr) == 4:
                self.skip = _U32.unpack(self.hdr)[0]
                self.hdr = b""
                self.entries += 1

    def finish(self, size):
        if self.skip or self.hdr:
            what = (f"inside entry {self.entries - 1}, {self.skip} bytes short" if self.skip
                    else "inside an entry length")
            if self.entries == 0 and self.skip:
                what = "inside the image magic"
            raise StreamerError(f"{self.name}: criu closed the pipe {what} (got {size} bytes): "
                                "the image is truncated (criu disconnected mid-file?)")


class BlockEncoder:
    """Encodes one pages file as it arrives: chunks of whole blocks go to the shared thread
    pool (lz4 releases the GIL), results are written in order as they complete."""

    def __init__(self, cap, fid):
        from ..compress.pipeline import chunk_size

        self.cap, self.fid = cap, fid
        self.block = cap.spec.block_pages * 4096
        self.chunk = chunk_size(self.block)
        self.acc = bytearray()
        self.inflight = collections.deque()  # (decoded length, future)

    def feed(self, data):
        if not self.acc and len(data) == self.chunk:
            self._submit(data)  # the common case with a 1 MiB pipe: no copy
        else:
            self.acc += data
            while len(self.acc) >= self.chunk:
                self._submit(bytes(self.acc[:self.chunk]))
                del self.acc[:self.chunk]
        self.drain(block=self.cap.inflight() > self.cap.window)

    def _submit(self, data):
        from ..compress.codec import encode_chunk
        from ..compress.pipeline import pool

        self.inflight.append((len(data), pool().submit(encode_chunk, data, self.block,
                                                       self.cap.spec.acceleration)))

    def drain(self, block=False):
        while self.inflight and (block or self.inflight[0][1].done()):
            n, fut = self.inflight.popleft()
            sizes, payload = fut.result()
            self.cap.writer.blocks(self.fid, self.block, n, sizes, payload)
            block = False

    def finish(self):
        if self.acc:
            self._submit(bytes(self.acc))
            self.acc = bytearray()
        while self.inflight:
            self.drain(block=True)


def pagemap_summary(data, name):
    """(pages_id, present pages) of a pagemap criu sent (checked against its pages file)."""
    from ..images import messages
    from ..images.framing import PAGEMAP_MAGIC, parse_image
    from ..images.pagemap import PE_PRESENT, entry_flags, entry_nr_pages

    raw = parse_image(data, name, PAGEMAP_MAGIC)
    if not raw.entries:
        raise StreamerError(f"{name}: no pagemap_head")
    head = messages.decode(messages.PagemapHead, raw.entries[0], f"{name}: head")
    present = 0
    for i, blob in enumerate(raw.entries[1:]):
        msg = messages.decode(messages.PagemapEntry, blob, f"{name}: entry {i}")
        if entry_flags(msg) & PE_PRESENT:
            present += entry_nr_pages(msg)
    return head.pages_id, present


# -- capture ---------------------------------------------------------------------------------

@dataclass
class CaptureResult:
    files: int
    image_bytes: int      # bytes criu sent
    stream_bytes: int     # bytes of stream written
    pages_in: int         # pages criu sent in pages files
    mode: str
    seconds: float


class _Open:
    """A pipe criu writes one image file into."""

    def __init__(self, name, fd, fid):
        self.name, self.fd, self.fid = name, fd, fid
        self.size = 0
        self.check = FramingCheck(name) if _FRAMED.fullmatch(name) else None
        self.pages = bool(_PAGES.fullmatch(name))
        self.encoder = None
        self.keep = bytearray() if _PAGEMAP.fullmatch(name) else None


class Capture:
    """Receive one `criu dump --stream` and write it as a stream (file path or binary fobj)."""

    def __init__(self, images_dir, out, spec=None, accept_timeout=60.0, idle_timeout=60.0,
                 log=None, fsync=False):
        from ..compress import CompressionSpec

        # criu does not fsync an image directory either; the END record and the rename make
        # a crash visible as a truncated stream, fsync makes it durable (--fsync)
        self.fsync = fsync
        self.images_dir = Path(images_dir)
        self.out = out
        self.spec = spec or CompressionSpec("off")
        self.accept_timeout = accept_timeout
        self.idle_timeout = idle_timeout
        self.log = log or (lambda line: None)
        self.window = 8  # encoded chunks in flight, over all files
        self.sock = self.sock_path = None
        self.encoders = []
        self.pagemaps = {}     # name -> (pages_id, present pages)
        self.pages_sizes = {}  # pages file name -> bytes received
        self.image_bytes = 0
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def listen(self):
        self.sock, self.sock_path = listen(self.images_dir, CAPTURE_SOCKET)
        self.log(f"capture: listening on {self.sock_path} (compression {self.spec.mode})")
        return self.sock_path

    def stop(self):
        """Ask a running capture (another thread) to give up."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def inflight(self):
        return sum(len(e.inflight) for e in self.encoders)

    def run(self):
        if self.sock is None:
            self.listen()
        start = now()
        fobj = part = conn = None
        opened = {}
        try:
            fobj, part = self._open_out()
            region = self.spec.region_size if self.spec.mode == "region" else 0
            self.writer = StreamWriter(fobj, self.spec.mode, region)
            conn = accept(self.sock, self.sock_path, self.accept_timeout)
            self.log("capture: criu connected")
            self._loop(Control(conn, f"capture {self.sock_path}", self.idle_timeout), opened)
            self._check_complete()
            self.writer.end()
            if part is not None:
                fobj.flush()
                if self.fsync:
                    os.fsync(fobj.fileno())
                fobj.close()
                os.rename(part, self.out)
        except BaseException:
            for o in opened.values():
                with contextlib.suppress(OSError):
                    os.close(o.fd)
            if part is not None:
                fobj.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
            raise
        finally:
            if conn is not None:
                conn.close()
            self._close()
        w = self.writer
        result = CaptureResult(w.files, self.image_bytes, w.written,
                               sum(self.pages_sizes.values()) // 4096, self.spec.mode,
                               now() - start)
        self.log(f"capture: done: {result.files} files, {result.image_bytes} image bytes -> "
                 f"{result.stream_bytes} stream bytes in {result.seconds:.2f}s")
        return result

    def _open_out(self):
        if not isinstance(self.out, (str, os.PathLike)):
            return self.out, None
        out = Path(self.out)
        part = out.with_name(f".{out.name}.part")
        try:
            return open(part, "xb"), part  # noqa: SIM115 (closed by run)
        except OSError as exc:
            raise StreamerError(f"capture: cannot create the stream file {part}: "
                                f"{exc.strerror}") from None

    def _close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sock_path)
        for e in self.encoders:
            for _, fut in e.inflight:
                fut.cancel()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = -1

    def _loop(self, control, opened):
        sel = selectors.DefaultSelector()
        sel.register(control.conn, selectors.EVENT_READ, "control")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        connected = True
        try:
            while connected or opened:
                events = sel.select(self.idle_timeout)
                if not events:
                    waiting = ", ".join(sorted(o.name for o in opened.values())) or "requests"
                    raise StageTimeout(f"capture {self.sock_path}: nothing from criu for "
                                       f"{self.idle_timeout:.0f}s (waiting for {waiting})")
                for key, _ in events:
                    if key.data == "stop":
                        raise StreamerError(f"capture {self.sock_path}: stopped")
                    if key.data == "control":
                        name = control.request()
                        if name is None:
                            self.log("capture: criu closed the control connection")
                            sel.unregister(control.conn)
                            connected = False
                            continue
                        o = self._open_file(control, name)
                        opened[o.fd] = o
                        sel.register(o.fd, selectors.EVENT_READ, o)
                    elif not self._read(key.data):
                        o = key.data
                        sel.unregister(o.fd)
                        os.close(o.fd)
                        del opened[o.fd]
                        self._close_file(o)
                for e in self.encoders:  # write whatever the pool has finished meanwhile
                    e.drain()
        finally:
            sel.close()

    def _open_file(self, control, name):
        check_name(name, f"capture {self.sock_path}: criu's request")
        fd = control.recv_fd(name)
        try:
            os.set_blocking(fd, False)
            _enlarge_pipe(fd)
            o = _Open(name, fd, self.writer.open(name))
        except BaseException:
            os.close(fd)
            raise
        if o.pages and self.spec.mode != "off":
            o.encoder = BlockEncoder(self, o.fid)
            self.encoders.append(o.encoder)
        self.log(f"capture: receiving {name}")
        return o

    def _read(self, o):
        try:
            data = os.read(o.fd, PIPE_READ)
        except BlockingIOError:
            return True
        if not data:
            return False
        o.size += len(data)
        self.image_bytes += len(data)
        if o.check is not None:
            o.check.feed(data)
        if o.keep is not None:
            o.keep += data
        if o.encoder is not None:
            o.encoder.feed(data)
        else:
            self.writer.write(o.fid, data)
        return True

    def _close_file(self, o):
        if o.check is not None:
            o.check.finish(o.size)
        if o.encoder is not None:
            o.encoder.finish()
            self.encoders.remove(o.encoder)
        if o.pages:
            self.pages_sizes[o.name] = o.size
        if o.keep is not None:
            self.pagemaps[o.name] = pagemap_summary(bytes(o.keep), o.name)
        self.writer.close(o.fid)
        self.log(f"capture: {o.name}: {o.size} bytes")

    def _check_complete(self):
        """criu's exit status is not ours to see: refuse a stream that cannot be whole."""
        problems = []
        named = set()
        for name, (pages_id, present) in sorted(self.pagemaps.items()):
            pages = f"pages-{pages_id}.img"
            named.add(pages)
            got = self.pages_sizes.get(pages)
            if got is None and present:
                problems.append(f"{name} names {pages}, which criu never sent")
            elif got is not None and got != present * 4096:
                how = "short of" if got < present * 4096 else "beyond"
                problems.append(f"{pages}: {got} bytes, {abs(got - present * 4096)} bytes "
                                f"{how} the {present} pages {name} describes (criu "
                                "disconnected mid-file?)")
        for pages in sorted(set(self.pages_sizes) - named):
            problems.append(f"{pages}: no pagemap names it")
        if "inventory.img" not in self.writer._names:
            problems.append("criu sent no inventory.img (criu writes it last): the dump did "
                            "not complete")
        if problems:
            raise StreamerError("capture: " + "; ".join(problems))


# -- serve -----------------------------------------------------------------------------------

def _write_all(fd, data, deadline, name):
    mv = memoryview(data)
    while mv:
        try:
            mv = mv[os.write(fd, mv):]
        except BlockingIOError:
            left = deadline() - now()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise StageTimeout(f"{name}: criu read nothing for a while") from None


class Serve:
    """Answer one `criu restore --stream` from a stream file (path, or a binary fobj that
    is spooled to a temporary file in the images dir first)."""

    def __init__(self, images_dir, stream, accept_timeout=60.0, idle_timeout=60.0, log=None,
                 verify=True):
        self.images_dir = Path(images_dir)
        self.stream = stream
        self.accept_timeout = accept_timeout
        self.idle_timeout = idle_timeout
        self.log = log or (lambda line: None)
        self.verify = verify
        self.sock = self.sock_path = None
        self.errors = []
        self.warnings = []
        self.served = {}
        self._spool = None
        self._stop = threading.Event()

    def prepare(self):
        """Index the stream (checking every record unless verify is off)."""
        path = self.stream
        if not isinstance(path, (str, os.PathLike)):
            self._spool = tempfile.NamedTemporaryFile(dir=self.images_dir,  # noqa: SIM115
                                                      prefix=".zdtmpy-stream-")
            while chunk := self.stream.read(1 << 20):
                self._spool.write(chunk)
            self._spool.flush()
            path = self._spool.name
        self.index = index_stream(path, verify=self.verify)
        self.path = Path(path)

    def listen(self):
        if not hasattr(self, "index"):
            self.prepare()
        self.sock, self.sock_path = listen(self.images_dir, SERVE_SOCKET)
        self.log(f"serve: listening on {self.sock_path} ({len(self.index.files)} files, "
                 f"compression {self.index.header.mode})")
        return self.sock_path

    def stop(self):
        self._stop.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def run(self):
        if self.sock is None:
            self.listen()
        conn = None
        threads = []
        try:
            conn = accept(self.sock, self.sock_path, self.accept_timeout)
            self.log("serve: criu connected")
            control = Control(conn, f"serve {self.sock_path}", self.idle_timeout)
            while not self._stop.is_set():
                name = control.request()
                if name is None:
                    break
                check_name(name, f"serve {self.sock_path}: criu's request")
                exists = name in self.index.files
                control.reply(exists)
                if not exists:
                    self.log(f"serve: {name}: not in the stream")
                    continue
                fd = control.recv_fd(name)
                t = threading.Thread(target=self._feed, args=(name, fd), daemon=True,
                                     name=f"serve-{name}")
                t.start()
                threads.append(t)
            deadline = now() + self.idle_timeout
            for t in threads:
                t.join(max(0.0, deadline - now()))
                if t.is_alive():
                    self._stop.set()
                    self.errors.append(f"{t.name[6:]}: still being fed after "
                                       f"{self.idle_timeout:.0f}s")
        finally:
            self._stop.set()
            if conn is not None:
                conn.close()
            self._close()
        if self.errors:
            raise StreamerError("serve: " + "; ".join(self.errors))
        self.log(f"serve: done: {len(self.served)} files served")
        return self.served

    def _close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sock_path)
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _feed(self, name, fd):
        sent = 0
        last = [now()]
        try:
            os.set_blocking(fd, False)
            _enlarge_pipe(fd)
            with open(self.path, "rb") as f:
                for piece in iter_file(f, self.index.files[name], str(self.path)):
                    if self._stop.is_set():
                        raise StreamerError(f"{name}: serve stopped")
                    last[0] = now()
                    _write_all(fd, piece, lambda: last[0] + self.idle_timeout, name)
                    sent += len(piece)
            self.served[name] = sent
            self.log(f"serve: {name}: {sent} bytes")
        except BrokenPipeError:
            self.warnings.append(name)
            self.log(f"serve: {name}: criu stopped reading after {sent} bytes")
        except (ZdtmError, OSError) as exc:
            self.errors.append(f"{name}: {exc}")
            self.log(f"serve: {name}: error: {exc}")
        finally:
            os.close(fd)


def stderr_log(prefix="zdtmpy stream"):
    def log(line):
        print(f"{prefix}: {time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)
    return log


__all__ = [
    "CAPTURE_SOCKET",
    "SERVE_SOCKET",
    "Capture",
    "CaptureResult",
    "Serve",
    "StreamerError",
    "listen",
]
