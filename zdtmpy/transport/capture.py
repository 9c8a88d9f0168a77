"""The dump side of zdtmpy's image streamer: receive one `criu dump --stream` as a stream.

criu opens several files at once and writes them interleaved (a pagemap and its pages file
in particular), so capture reads every pipe from one event loop and never blocks on one.

Pages are compressed on the fly. criu sends a pages file before the pagemap that describes
it (the pagemap sits in criu's 4 KiB write buffer until it fills or closes), so waiting for
entries would mean holding the whole dump: instead each pages file is cut into blocks on its
own grid (one page or one region) and every block stored zero / raw / LZ4 as CRIU does, in a
thread pool while criu keeps writing. Memory stays at a few chunks per pages file. Other
files pass through unchanged.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..codec import Compression
from ..errors import StageTimeout
from .captureblocks import BlockEncoder
from .streamcheck import FRAMED, PAGEMAP, PAGES, FramingCheck, check_complete, pagemap_summary
from .streamformat import StreamWriter, check_name
from .streamproto import (
    CAPTURE_SOCKET,
    PIPE_SIZE,
    Control,
    Listener,
    StreamerError,
    messages,
    prepare_pipe,
)


@dataclass
class CaptureResult:
    files: int
    image_bytes: int      # bytes criu sent
    stream_bytes: int     # bytes of stream written
    pages_in: int         # pages criu sent in pages files
    layout: str           # compression layout of the stream
    seconds: float


def warm_up(encoding: bool) -> None:
    """The protocol's and the pagemap's messages (the protobuf import: 85 ms here), and for
    a compressing capture the codec's native helper with its self-test and the pool, before
    the socket appears: otherwise criu's first request, first pages chunk and first pagemap
    wait for them, inside the dump."""
    from ..images import messages as image_messages

    messages()
    image_messages.PagemapHead   # noqa: B018 - built on first use: a pagemap's close needs it
    if encoding:
        from ..codec.lz4native import helper
        from ..compress.pipeline import pool

        helper()
        pool()


class _Open:
    """A pipe criu writes one image file into."""

    def __init__(self, name: str, fd: int, fid: int) -> None:
        self.name, self.fd, self.fid = name, fd, fid
        self.size = 0
        self.check = FramingCheck(name) if FRAMED.fullmatch(name) else None
        self.pages = bool(PAGES.fullmatch(name))
        self.encoder: BlockEncoder | None = None
        self.keep = bytearray() if PAGEMAP.fullmatch(name) else None


class Capture:
    """Receive one `criu dump --stream` and write it as a stream (file path or binary fobj)."""

    writer: StreamWriter   # set by run()
    where: str             # set by listen()

    def __init__(self, images_dir: str | os.PathLike[str],
                 out: str | os.PathLike[str] | BinaryIO, spec: Compression | None = None,
                 accept_timeout: float = 60.0, idle_timeout: float = 60.0,
                 log: Callable[[str], None] | None = None, fsync: bool = False) -> None:
        from ..codec import OFF

        # criu does not fsync an image directory either; the END record and the rename make
        # a crash visible as a truncated stream, fsync makes it durable (--fsync)
        self.fsync = fsync
        self.images_dir = Path(images_dir)
        self.out = out
        self.spec = spec or OFF
        self.accept_timeout = accept_timeout
        self.idle_timeout = idle_timeout
        self.log = log or (lambda line: None)
        # chunks read and not yet written, over all files: a slow stream output holds the
        # loop (and criu, on its full pipe) instead of the loop reading the dump into memory
        self.window = 8
        self.room = threading.Semaphore(self.window)
        self.out_lock = threading.Lock()   # the writer: the loop's records, the pool's
        self.failed = False   # set (under out_lock) before the stream file is abandoned
        self.listener: Listener | None = None
        self.where = f"capture {self.images_dir}"   # listen() names the socket
        self.encoders: list[BlockEncoder] = []
        self.pagemaps: dict[str, tuple[int, int]] = {}   # name -> (pages_id, present pages)
        self.pages_sizes: dict[str, int] = {}  # pages file name -> bytes received
        self.image_bytes = 0
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def listen(self) -> Path:
        """Load what answering criu needs, then create the socket criu connects to (its
        appearance says ready); returns its path."""
        warm_up(self.spec.enabled)
        self.listener = Listener(self.images_dir, CAPTURE_SOCKET)
        self.where = f"capture {self.listener.path}"
        self.log(f"capture: listening on {self.listener.path} (compression {self.spec.name})")
        return self.listener.path

    def stop(self) -> None:
        """Ask a running capture (another thread) to give up."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def wait_room(self) -> None:
        """Take a place for one more chunk (a pool thread gives it back once the chunk's
        record is written), raising meanwhile a pool error or a stop."""
        while not self.room.acquire(timeout=0.05):
            for e in self.encoders:
                e.drain()   # a failed encode or write: its error, here
            try:
                if os.read(self._stop_r, 1):
                    raise StreamerError(f"{self.where}: stopped")
            except BlockingIOError:
                pass

    def run(self) -> CaptureResult:
        if self.listener is None:
            self.listen()
        listener = self.listener
        assert listener is not None  # listen() made it
        start = time.monotonic()
        fobj: BinaryIO | None = None
        part: Path | None = None
        conn = None
        opened: dict[int, _Open] = {}
        try:
            fobj, part = self._open_out()
            self.writer = StreamWriter(fobj, self.spec)
            conn = listener.accept(self.accept_timeout)
            self.log("capture: criu connected")
            self._loop(Control(conn, self.where, self.idle_timeout), opened)
            check_complete(self.pagemaps, self.pages_sizes, self.writer.names)
            with self.out_lock:
                self.writer.end()
            if part is not None and isinstance(self.out, (str, os.PathLike)):  # a path: staged
                fobj.flush()
                if self.fsync:
                    os.fsync(fobj.fileno())
                fobj.close()
                os.rename(part, self.out)
        except BaseException as exc:
            # a pool thread may be stuck writing to an output nobody reads (Ctrl-C): after
            # its write it sees failed anyway, so the wait for the lock is bounded
            locked = self.out_lock.acquire(timeout=5)
            self.failed = True
            if locked:
                self.out_lock.release()
            for o in opened.values():
                with contextlib.suppress(OSError):
                    os.close(o.fd)
            if part is not None and fobj is not None:
                with contextlib.suppress(OSError):  # flushing again fails again (ENOSPC)
                    fobj.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
            if isinstance(exc, OSError):  # the first error, named, never a traceback
                what = str(part or exc.filename or "the stream")
                raise StreamerError(f"capture: writing {what} failed: "
                                    f"{exc.strerror or exc}") from None
            raise
        finally:
            if conn is not None:
                conn.close()
            self._close()
        w = self.writer
        result = CaptureResult(w.files, self.image_bytes, w.written,
                               sum(self.pages_sizes.values()) // 4096, self.spec.layout,
                               time.monotonic() - start)
        self.log(f"capture: done: {result.files} files, {result.image_bytes} image bytes -> "
                 f"{result.stream_bytes} stream bytes in {result.seconds:.2f}s")
        return result

    def _open_out(self) -> tuple[BinaryIO, Path | None]:
        if not isinstance(self.out, (str, os.PathLike)):
            return self.out, None
        out = Path(self.out)
        part = out.with_name(f".{out.name}.part")
        try:
            return open(part, "xb"), part  # noqa: SIM115 (closed by run)
        except OSError as exc:
            raise StreamerError(f"capture: cannot create the stream file {part}: "
                                f"{exc.strerror}") from None

    def _close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for e in self.encoders:
            for fut in e.inflight:
                fut.cancel()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = -1

    def _loop(self, control: Control, opened: dict[int, _Open]) -> None:
        sel = selectors.DefaultSelector()
        sel.register(control.conn, selectors.EVENT_READ, "control")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        connected = True
        try:
            while connected or opened:
                events = sel.select(self.idle_timeout)
                if not events:
                    waiting = ", ".join(sorted(o.name for o in opened.values())) or "requests"
                    raise StageTimeout(f"{self.where}: nothing from criu for "
                                       f"{self.idle_timeout:.0f}s (waiting for {waiting})")
                for key, _ in events:
                    if key.data == "stop":
                        raise StreamerError(f"{self.where}: stopped")
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
                        assert isinstance(o, _Open)  # the data of every other registration
                        sel.unregister(o.fd)
                        os.close(o.fd)
                        del opened[o.fd]
                        self._close_file(o)
                for e in self.encoders:  # write whatever the pool has finished meanwhile
                    e.drain()
        finally:
            sel.close()

    def _open_file(self, control: Control, name: str) -> _Open:
        check_name(name, f"{self.where}: criu's request")
        fd = control.recv_fd(name)
        try:
            prepare_pipe(fd, name)
            with self.out_lock:
                fid = self.writer.open(name)
            o = _Open(name, fd, fid)
        except BaseException:
            os.close(fd)
            raise
        if o.pages and self.spec.enabled:
            o.encoder = BlockEncoder(self, o.fid)
            self.encoders.append(o.encoder)
        self.log(f"capture: receiving {name}")
        return o

    def _read(self, o: _Open) -> bool:
        try:
            if o.encoder is not None:   # a pages file: straight into its chunk buffer
                n = o.encoder.read(o.fd)
                o.size += n
                self.image_bytes += n
                return n > 0
            data = os.read(o.fd, PIPE_SIZE)
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
        with self.out_lock:
            self.writer.write(o.fid, data)
        return True

    def _close_file(self, o: _Open) -> None:
        if o.check is not None:
            o.check.finish(o.size)
        if o.encoder is not None:
            o.encoder.finish()
            self.encoders.remove(o.encoder)
        if o.pages:
            self.pages_sizes[o.name] = o.size
        if o.keep is not None:
            self.pagemaps[o.name] = pagemap_summary(bytes(o.keep), o.name)
        with self.out_lock:
            self.writer.close(o.fid)
        self.log(f"capture: {o.name}: {o.size} bytes")
