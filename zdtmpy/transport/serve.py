"""The restore side of zdtmpy's image streamer: feed `criu restore --stream` from a stream.

The whole stream is checked before the socket appears (every record's CRC, the record
rules, every file but the pages whole, pages sizes against their pagemaps), so criu never
starts reading a truncated or corrupt stream. Each requested file is fed by a thread of its
own (criu reads several at once); compressed blocks are decoded, and so checked, on the way,
a record before any byte of it is written (servefeed): a forged block that passes its CRC
fails the restore naming the file and block, it never hands criu wrong pages.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

from ..errors import ZdtmError
from ..images.safeopen import IMAGE_MAX
from . import pipegift
from .pipegift import Arena
from .servefeed import WRITE_STEP, records, write_all
from .streamcheck import PAGEMAP, pagemap_summary, pages_mismatches
from .streamformat import StreamError, check_name
from .streamindex import FileIndex, StreamIndex, index_stream
from .streamproto import (
    F_GETPIPE_SZ,
    SERVE_SOCKET,
    Control,
    Listener,
    StreamerError,
    messages,
    prepare_pipe,
)

SMALL_FILE = 64 << 10   # a pipe's default size: what criu's fresh pipe takes at once


class Serve:
    """Answer one `criu restore --stream` from a stream file (path, or a binary fobj that
    is spooled to a temporary file in the images dir first)."""

    index: StreamIndex   # set by prepare()
    path: Path           # the stream file, set by prepare()

    def __init__(self, images_dir: str | os.PathLike[str],
                 stream: str | os.PathLike[str] | BinaryIO, accept_timeout: float = 60.0,
                 idle_timeout: float = 60.0, log: Callable[[str], None] | None = None,
                 verify: bool = True) -> None:
        self.images_dir = Path(images_dir)
        self.stream = stream
        self.accept_timeout = accept_timeout
        self.idle_timeout = idle_timeout
        self.log = log or (lambda line: None)
        self.verify = verify
        self.listener: Listener | None = None
        self.errors: list[str] = []
        self.warnings: list[str] = []   # files criu stopped reading early
        self.served: dict[str, int] = {}   # name -> bytes fed
        self._spool: IO[bytes] | None = None
        self._stop = threading.Event()

    def prepare(self) -> None:
        """Index the stream (checking every record unless verify is off)."""
        path = self.stream
        if not isinstance(path, (str, os.PathLike)):
            spool = self._spool = tempfile.NamedTemporaryFile(  # noqa: SIM115
                dir=self.images_dir, prefix=".zdtmpy-stream-")
            while chunk := path.read(1 << 20):
                spool.write(chunk)
            spool.flush()
            path = spool.name
        warm = threading.Thread(target=warm_up, daemon=True, name="serve-warm-up")
        warm.start()   # beside the check: criu would otherwise wait for it at its first page
        try:
            self.index = index_stream(path, verify=self.verify)
            self.path = Path(path)
            check_pages_sizes(self.path, self.index)
        finally:
            warm.join()

    def listen(self) -> Path:
        """Prepare unless done, then create the socket criu connects to; returns its path."""
        if not hasattr(self, "index"):
            self.prepare()
        listener = self.listener = Listener(self.images_dir, SERVE_SOCKET)
        self.log(f"serve: listening on {listener.path} ({len(self.index.files)} files, "
                 f"compression {self.index.header.compression.name})")
        return listener.path

    def stop(self) -> None:
        self._stop.set()
        if self.listener is not None:
            self.listener.shutdown()

    def run(self) -> dict[str, int]:
        """Serve criu's requests until it hangs up; returns {name: bytes fed}."""
        if self.listener is None:
            self.listen()
        listener = self.listener
        assert listener is not None  # listen() made it
        where = f"serve {listener.path}"
        conn = None
        threads: list[threading.Thread] = []
        try:
            conn = listener.accept(self.accept_timeout)
            self.log("serve: criu connected")
            control = Control(conn, where, self.idle_timeout)
            while not self._stop.is_set():
                name = control.request()
                if name is None:
                    break
                check_name(name, f"{where}: criu's request")
                exists = name in self.index.files
                control.reply(exists)
                if not exists:
                    self.log(f"serve: {name}: not in the stream")
                    continue
                fd = control.recv_fd(name)
                if fits_at_once(fd, self.index.files[name]):
                    self._feed(name, fd, ahead=False)   # no thread, pool or wait: done now
                    continue
                t = threading.Thread(target=self._feed, args=(name, fd), daemon=True,
                                     name=f"serve-{name}")
                t.start()
                threads.append(t)
            deadline = time.monotonic() + self.idle_timeout
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    self._stop.set()
                    self.errors.append(f"{t.name[6:]}: still being fed after "
                                       f"{self.idle_timeout:.0f}s")
        finally:
            self._stop.set()
            if conn is not None:
                conn.close()
            listener.close()
            if self._spool is not None:
                self._spool.close()
                self._spool = None
        if self.errors:
            raise StreamerError("serve: " + "; ".join(self.errors))
        self.log(f"serve: done: {len(self.served)} files served")
        return self.served

    def _feed(self, name: str, fd: int, ahead: bool = True) -> None:
        sent = 0
        # a big file's records go by reference (pipegift: criu's copy is then the only one
        # on its critical path); a small one fed at once is not worth fresh memory
        arena = Arena() if ahead and pipegift.usable() else None
        try:
            prepare_pipe(fd, name)
            fi = self.index.files[name]
            with _open_stream(self.path) as src, contextlib.closing(records(
                    src.fileno(), fi.chunks, f"{self.path}: {name}", ahead, arena)) as recs:
                for rec in recs:
                    if self._stop.is_set():
                        raise StreamerError(f"{name}: serve stopped")
                    if rec.span is not None:
                        sent += pipegift.splice_all(fd, rec.span.addr, rec.nbytes, WRITE_STEP,
                                                    self.idle_timeout, name, self._stop)
                    else:
                        sent += write_all(fd, rec.pieces, self.idle_timeout, name, self._stop)
            if sent != fi.size:
                raise StreamError(f"{self.path}: {name}: {sent} bytes, the stream said "
                                  f"{fi.size} (it changed after it was checked)")
            self.served[name] = sent
            self.log(f"serve: {name}: {sent} bytes")
        except BrokenPipeError:
            self.warnings.append(name)
            self.log(f"serve: {name}: criu stopped reading after {sent} bytes")
        except (ZdtmError, OSError) as exc:
            self.errors.append(f"{name}: {exc}")
            self.log(f"serve: {name}: error: {exc}")
        except BaseException as exc:  # a dying feeder must fail serve, never pass silently
            self.errors.append(f"{name}: internal error after {sent} bytes: {exc!r}")
            self.log(f"serve: {name}: internal error: {exc!r}")
        finally:
            if arena is not None:
                arena.close()
            os.close(fd)


def fits_at_once(fd: int, fi: FileIndex) -> bool:
    """A one-record file that criu's (still empty) pipe takes whole in one write: the
    control thread feeds it without waiting (criu reads its small images one by one, and
    a thread and the pool cost it ~1 ms each, measured). False for anything else, also
    for a descriptor that is not a pipe (the feeder thread refuses it)."""
    if len(fi.chunks) != 1 or fi.size > SMALL_FILE:
        return False
    try:
        room = fcntl.fcntl(fd, F_GETPIPE_SZ)
        queued = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    return int.from_bytes(queued, sys.byteorder) == 0 and fi.size <= room


def warm_up() -> None:
    """Import and load what answering criu needs (the protocol's messages, the block codec,
    its native helper and self-test, the thread pool) before criu connects: criu waited
    40-80 ms for each at its first request and its first page (measured)."""
    from ..codec.coding import decode_into  # noqa: F401 - the import is the point
    from ..codec.lz4native import helper
    from ..compress.pipeline import pool

    messages()
    helper()
    pool()
    pipegift.usable()   # its probe: a pipe, a mapping, a vmsplice


def check_pages_sizes(path: str | os.PathLike[str], index: StreamIndex,
                      action: str = "serve") -> None:
    """Before criu sees anything: every pages file carries exactly the pages its pagemap
    describes (a stream that passes its CRCs can still announce other sizes)."""
    problems: list[str] = []
    pagemaps: dict[str, tuple[int, int]] = {}
    for name, fi in sorted(index.files.items()):
        if not PAGEMAP.fullmatch(name):
            continue
        if fi.size > IMAGE_MAX:
            problems.append(f"{name}: {fi.size} bytes, more than a pagemap may hold")
            continue
        with _open_stream(path) as src:
            data = b"".join(bytes(p) for rec in records(src.fileno(), fi.chunks,
                                                        f"{path}: {name}")
                            for p in rec.pieces)
        pagemaps[name] = pagemap_summary(data, f"{path}: {name}")
    problems += pages_mismatches(pagemaps, {n: fi.size for n, fi in index.files.items()})
    if problems:
        what = "nothing was sent to criu" if action == "serve" else "nothing was written"
        raise StreamerError(f"{action}: {path}: refusing to {action}, {what}: "
                            + "; ".join(problems))


def _open_stream(path: str | os.PathLike[str]) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115 (a context manager for callers)
    except OSError as exc:
        raise StreamError(f"{path}: cannot open stream: {exc.strerror}") from None
