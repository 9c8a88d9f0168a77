"""One page-server connection: exact reads with a timeout that name what they waited for."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Literal, overload

from ..errors import PageServerError


class Described:
    """What a read waits for, put into words only when an error needs them (a payload chunk
    is read thousands of times per dump and fails at most once)."""

    __slots__ = ("_describe",)

    def __init__(self, describe: Callable[[], str]) -> None:
        self._describe = describe

    def __str__(self) -> str:
        return self._describe()


class Conn:
    """A connected socket whose every read has a timeout and names what it waited for."""

    def __init__(self, sock: socket.socket, timeout: float, peer: str,
                 session_timeout: float | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        # the whole session's deadline: a peer dripping a byte per read-timeout cannot hold
        # the (one-session-at-a-time) server for ever
        self.session_timeout = session_timeout
        self.deadline = None if session_timeout is None else \
            time.monotonic() + session_timeout
        self.commands = 0  # commands the session accepted (0: not a criu session at all)
        # A blocking socket with kernel timeouts, not settimeout(): Python would poll()
        # before every recv, and MSG_WAITALL (one recv per payload chunk) needs blocking.
        sock.settimeout(None)
        tv = struct.pack("@ll", int(timeout), int((timeout % 1) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self.received = 0

    @overload
    def recv_exact(self, n: int, what: str, eof_ok: Literal[False] = False,
                   hint: str = "") -> bytearray: ...

    @overload
    def recv_exact(self, n: int, what: str, eof_ok: bool, hint: str = "") -> bytearray | None: ...

    def recv_exact(self, n: int, what: str, eof_ok: bool = False,
                   hint: str = "") -> bytearray | None:
        """n bytes as a new bytearray; None at a clean end of stream when eof_ok."""
        buf = bytearray(n)
        if not self.recv_into(buf, n, what, eof_ok, hint):
            return None
        return buf

    def recv_into(self, buf: bytearray, n: int, what: str | Described, eof_ok: bool = False,
                  hint: str = "") -> bool:
        """Fill the first n bytes of the bytearray buf. False at a clean end of stream
        (nothing read) when eof_ok; PageServerError on a timeout, an error or a cut."""
        view = memoryview(buf)
        got = 0
        recv_into = self.sock.recv_into
        while got < n:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise PageServerError(f"peer {self.peer}: session still running after its "
                                      f"overall deadline of {self.session_timeout:g}s "
                                      f"(waiting for {what})")
            try:
                k = recv_into(view[got:n], n - got, socket.MSG_WAITALL)
            except (BlockingIOError, socket.timeout):  # SO_RCVTIMEO expired
                raise PageServerError(f"peer {self.peer}: nothing received for "
                                      f"{self.timeout:g}s while waiting for {what}"
                                      f"{hint if got else ''}") from None
            except OSError as exc:
                raise PageServerError(f"peer {self.peer}: {exc.strerror or exc} while "
                                      f"reading {what}") from None
            if k == 0:
                if got == 0 and eof_ok:
                    return False
                raise PageServerError(f"peer {self.peer}: connection closed after {got} of "
                                      f"{n} bytes of {what}{hint}")
            got += k
        self.received += n
        return True

    def send(self, data: bytes | bytearray | memoryview, what: str) -> None:
        try:
            self.sock.sendall(data)
        except (BlockingIOError, socket.timeout):
            raise PageServerError(f"peer {self.peer}: cannot send {what}: nothing sent for "
                                  f"{self.timeout:g}s") from None
        except OSError as exc:
            raise PageServerError(f"peer {self.peer}: cannot send {what}: "
                                  f"{exc.strerror or exc}") from None
