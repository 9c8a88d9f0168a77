"""criu's image streamer protocol (criu/img-streamer.c), shared by capture and serve.

criu connects to a UNIX stream socket in the images dir (`streamer-capture.sock` on dump,
`streamer-serve.sock` on restore). For every image file it sends `u32 length +
img_streamer_request_entry{filename}`; on restore the streamer answers `u32 length +
img_streamer_reply_entry{exists}`; then criu passes one end of a fresh pipe with SCM_RIGHTS
(one dummy data byte) and writes (dump) or reads (restore) the file through it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
import stat
import struct
import threading
from pathlib import Path
from typing import Any

from ..errors import StageTimeout, ZdtmError
from ..images.safeopen import file_kind

CAPTURE_SOCKET = "streamer-capture.sock"
SERVE_SOCKET = "streamer-serve.sock"
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_U32 = struct.Struct("<I")

_PROTO = """
syntax = "proto2";
package zdtmpy.streamer;
message img_streamer_request_entry { required string filename = 1; }
message img_streamer_reply_entry { required bool exists = 1; }
"""


class StreamerError(ZdtmError):
    """The image streamer failed: names the side, the file and what was expected."""


@functools.cache
def messages() -> dict[str, Any]:
    """The protocol's message classes (built once: the protobuf import takes a while)."""
    from ..images.protoparse import load_messages

    return load_messages({"img-streamer.proto": _PROTO})


class Listener:
    """An owner-only listening socket images_dir/name. It is bound under a temporary name,
    chmod'ed, put in listen state and only then renamed into place: its appearance is the
    readiness signal (criu can never connect too early or to a world-writable socket)."""

    def __init__(self, images_dir: str | os.PathLike[str], name: str) -> None:
        images_dir = Path(images_dir)
        final = images_dir / name
        tmp = images_dir / f".zs{os.getpid()}-{threading.get_ident() % 1000}"  # <= final
        for p in (final, tmp):
            if len(os.fsencode(p)) >= 108:
                raise StreamerError(f"socket path {p} is too long for AF_UNIX (max 107 "
                                    "bytes); use a shorter images directory")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if final.exists() or final.is_symlink():
            raise StreamerError(f"{final} already exists: another streamer is running here, "
                                "or a stale socket was left behind (remove it)")
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
        self.sock: socket.socket | None = sock
        self.path = final

    def accept(self, timeout: float) -> socket.socket:
        if self.sock is None:
            raise StreamerError(f"{self.path}: the listener is closed")
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            raise StageTimeout(f"{self.path}: criu did not connect within "
                               f"{timeout:.0f}s") from None
        conn.settimeout(None)
        return conn

    def shutdown(self) -> None:
        """Wake an accept() blocked in another thread."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close and remove the socket (once; later calls do nothing)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class Control:
    """criu's control connection: framed requests, replies, and pipe ends by SCM_RIGHTS."""

    def __init__(self, conn: socket.socket, where: str, timeout: float) -> None:
        self.conn = conn
        self.where = where
        self.timeout = timeout

    def _recv_exact(self, n: int, what: str, eof_ok: bool = False) -> bytes | None:
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

    def request(self) -> str | None:
        """The next requested file name, or None when criu closed the connection."""
        head = self._recv_exact(4, "request", eof_ok=True)
        if head is None:
            return None
        (n,) = _U32.unpack(head)
        if n > 4096:
            raise StreamerError(f"{self.where}: request of {n} bytes (expected a small "
                                "img_streamer_request_entry)")
        msg = messages()["img_streamer_request_entry"]()
        try:
            msg.ParseFromString(self._recv_exact(n, "request"))
        except Exception as exc:  # protobuf raises its own DecodeError
            raise StreamerError(f"{self.where}: bad img_streamer_request_entry: {exc}") from None
        if not msg.IsInitialized():
            raise StreamerError(f"{self.where}: img_streamer_request_entry without a filename")
        return str(msg.filename)

    def reply(self, exists: bool) -> None:
        msg = messages()["img_streamer_reply_entry"](exists=exists)
        data = msg.SerializeToString()
        self.conn.settimeout(self.timeout)
        try:
            self.conn.sendall(_U32.pack(len(data)) + data)
        except OSError as exc:
            raise StreamerError(f"{self.where}: cannot answer criu: "
                                f"{exc.strerror or exc}") from None

    def recv_fd(self, name: str) -> int:
        """The pipe end criu passes for `name` (one dummy byte carrying SCM_RIGHTS)."""
        self.conn.settimeout(self.timeout)
        try:
            data, anc, flags, _ = self.conn.recvmsg(1, socket.CMSG_SPACE(4 * 4))
        except TimeoutError:
            raise StageTimeout(f"{self.where}: criu passed no pipe for {name} within "
                               f"{self.timeout:.0f}s") from None
        fds: list[int] = []
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


def prepare_pipe(fd: int, name: str = "the file") -> None:
    """A pipe end criu passed, ready for the event loop / writer threads: non-blocking, and
    enlarged up to fs.pipe-max-size when allowed (fewer wakeups). StreamerError when the
    peer passed anything but a pipe (a file, socket or directory would be read or written
    as if it were criu's image)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISFIFO(mode):
        raise StreamerError(f"{name}: the peer passed {file_kind(mode)} instead of a pipe; "
                            "refusing it")
    os.set_blocking(fd, False)
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
