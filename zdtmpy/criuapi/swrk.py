"""One `criu swrk` service process and the message exchange with it.

criu's RPC travels over a SOCK_SEQPACKET socket pair: one packet per criu_req / criu_resp,
no framing. `criu swrk FD` serves requests on the inherited end until the client closes its
end (or, without keep_open, after the first request). Everything here is bounded: each
receive has the caller's deadline, each packet at most MAX_PACKET bytes, and the service
runs in its own session so a hung one is killed with everything it forked.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from ..errors import CriuFailure, StageTimeout
from ..images.protoparse import load_messages

PROTO = Path(__file__).with_name("proto") / "rpc.proto"
MAX_PACKET = 1 << 20  # criu's answers are a few hundred bytes; anything this big is garbage


@functools.cache
def messages() -> dict[str, Any]:
    """Message classes of rpc.proto by proto name (criu_req, criu_resp, criu_opts, ...)."""
    return load_messages({"rpc.proto": PROTO.read_text()})


def req_type(name: str) -> int:
    """criu_req_type value by name, e.g. 'DUMP'."""
    enum = messages()["criu_req"].DESCRIPTOR.fields_by_name["type"].enum_type
    return int(enum.values_by_name[name].number)


def req_type_name(number: int) -> str:
    enum = messages()["criu_req"].DESCRIPTOR.fields_by_name["type"].enum_type
    value = enum.values_by_number.get(number)
    return value.name if value else f"type {number}"


class SwrkService:
    """A running `criu swrk`; a context manager that always ends it."""

    def __init__(self, criu_path: Path, output: Path, what: str,
                 env: dict[str, str] | None = None):
        self.what = what  # e.g. "criu dump over RPC", for messages
        self.output = output  # criu's own stdout/stderr (the log goes to log_file)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        try:
            with open(output, "ab") as out:
                self.proc = subprocess.Popen(
                    [str(criu_path), "swrk", str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    pass_fds=(theirs.fileno(),), start_new_session=True, env=env)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()

    def __enter__(self) -> SwrkService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, req: Any) -> None:
        try:
            self.sock.sendall(req.SerializeToString())
        except OSError as exc:
            raise CriuFailure(f"{self.what}: cannot send {req_type_name(req.type)} to "
                              f"criu swrk (pid {self.proc.pid}): {exc.strerror}") from None

    def recv(self, deadline: float) -> Any:
        """The next criu_resp, waiting until `deadline` (time.monotonic())."""
        left = deadline - time.monotonic()
        ready = select.select([self.sock], [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            raise StageTimeout(f"{self.what}: criu swrk (pid {self.proc.pid}) sent no answer "
                               "in time (killed)")
        try:
            data = self.sock.recv(MAX_PACKET, socket.MSG_TRUNC)
        except OSError as exc:
            raise CriuFailure(f"{self.what}: reading criu swrk's answer: {exc.strerror}") \
                from None
        if not data:
            rc = self._reap(5.0)
            raise CriuFailure(f"{self.what}: criu swrk closed the connection without an "
                              f"answer ({_status(rc)})")
        if len(data) > MAX_PACKET:
            raise CriuFailure(f"{self.what}: criu swrk sent a {len(data)}-byte packet "
                              f"(more than {MAX_PACKET})")
        resp = messages()["criu_resp"]()
        try:
            resp.ParseFromString(data)
        except DecodeError as exc:
            raise CriuFailure(f"{self.what}: unparsable criu_resp from criu swrk: {exc}") \
                from None
        if not resp.IsInitialized():
            raise CriuFailure(f"{self.what}: criu_resp lacks "
                              f"{', '.join(resp.FindInitializationErrors())}")
        return resp

    def finish(self, timeout: float) -> int | None:
        """Close our end and give criu swrk `timeout` seconds to exit; its exit status."""
        self.sock.close()
        return self._reap(timeout)

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def _reap(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def _status(rc: int | None) -> str:
    if rc is None:
        return "it did not exit and was killed"
    if rc < 0:
        return f"it died of signal {signal.Signals(-rc).name}"
    return f"it exited with status {rc}"
