"""The restore side of zdtmpy's image streamer: feed `criu restore --stream` from a stream.

The whole stream is checked before the socket appears, so criu never starts reading a stream
that fails later. Each requested file is fed by a thread of its own (criu reads several at
once), decoding compressed blocks on the way.
"""

from __future__ import annotations

import os
import select
import tempfile
import threading
import time
from pathlib import Path

from ..errors import StageTimeout, ZdtmError
from ..images.safeopen import IMAGE_MAX
from .streamcheck import PAGEMAP, pagemap_summary, pages_mismatches
from .streamformat import check_name
from .streamindex import index_stream, iter_file
from .streamproto import SERVE_SOCKET, Control, Listener, StreamerError, prepare_pipe


def _write_all(fd, data, deadline, name):
    """All of data into a non-blocking pipe, or StageTimeout once time.monotonic() passes
    deadline."""
    mv = memoryview(data)
    while mv:
        try:
            mv = mv[os.write(fd, mv):]
        except BlockingIOError:
            left = deadline - time.monotonic()
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
        self.listener = None
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
        check_pages_sizes(self.path, self.index)

    def listen(self):
        if not hasattr(self, "index"):
            self.prepare()
        self.listener = Listener(self.images_dir, SERVE_SOCKET)
        self.log(f"serve: listening on {self.listener.path} ({len(self.index.files)} files, "
                 f"compression {self.index.header.compression.name})")
        return self.listener.path

    def stop(self):
        self._stop.set()
        if self.listener is not None:
            self.listener.shutdown()

    def run(self):
        if self.listener is None:
            self.listen()
        where = f"serve {self.listener.path}"
        conn = None
        threads = []
        try:
            conn = self.listener.accept(self.accept_timeout)
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
            self.listener.close()
            if self._spool is not None:
                self._spool.close()
                self._spool = None
        if self.errors:
            raise StreamerError("serve: " + "; ".join(self.errors))
        self.log(f"serve: done: {len(self.served)} files served")
        return self.served

    def _feed(self, name, fd):
        sent = 0
        try:
            prepare_pipe(fd, name)
            with open(self.path, "rb") as f:
                for piece in iter_file(f, self.index.files[name], str(self.path)):
                    if self._stop.is_set():
                        raise StreamerError(f"{name}: serve stopped")
                    _write_all(fd, piece, time.monotonic() + self.idle_timeout, name)
                    sent += len(piece)
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
            os.close(fd)


def check_pages_sizes(path, index, action="serve"):
    """Before criu sees anything: every pages file carries exactly the pages its pagemap
    describes (a stream that passes its CRCs can still announce other sizes)."""
    problems = []
    pagemaps = {}
    for name, fi in sorted(index.files.items()):
        if not PAGEMAP.fullmatch(name):
            continue
        if fi.size > IMAGE_MAX:
            problems.append(f"{name}: {fi.size} bytes, more than a pagemap may hold")
            continue
        with open(path, "rb") as f:
            data = b"".join(bytes(p) for p in iter_file(f, fi, str(path)))
        pagemaps[name] = pagemap_summary(data, f"{path}: {name}")
    problems += pages_mismatches(pagemaps, {n: fi.size for n, fi in index.files.items()})
    if problems:
        what = "nothing was sent to criu" if action == "serve" else "nothing was written"
        raise StreamerError(f"{action}: {path}: refusing to {action}, {what}: "
                            + "; ".join(problems))
