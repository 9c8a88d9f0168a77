"""The RPC back end: each criu action is one request to a fresh `criu swrk` service.

Notifications (criu's action-script points) are answered with success and recorded, in
arrival order, next to the criu log (`<log>.notify`); an action whose notifications are
missing or out of order fails like a criu error would.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..criu import Criu, CriuRun, log_excerpt
from ..errors import CriuFailure, StageTimeout, ZdtmError
from .options import to_opts
from .swrk import SwrkService, messages, req_type, req_type_name

_REQUESTS = {"dump": "DUMP", "pre-dump": "PRE_DUMP", "restore": "RESTORE"}

# The order criu reaches its action-script points in; the required ones must all arrive.
NOTIFY_ORDER = {
    "dump": ("pre-dump", "network-lock", "post-dump", "network-unlock"),
    "pre-dump": ("pre-dump", "network-lock", "post-dump", "network-unlock"),
    "restore": ("pre-restore", "setup-namespaces", "post-setup-namespaces", "network-lock",
                "post-restore", "pre-resume", "network-unlock", "post-resume"),
}
NOTIFY_REQUIRED = {
    "dump": ("pre-dump", "post-dump"),
    "pre-dump": ("pre-dump", "post-dump"),
    "restore": ("pre-restore", "post-restore", "pre-resume", "post-resume"),
}


def notify_problem(action: str, seen: list[str], leave_running: bool = False) -> str | None:
    """Why the notifications of one action are wrong, or None."""
    order = NOTIFY_ORDER.get(action, ())
    known = [s for s in seen if s in order]
    if [order.index(s) for s in known] != sorted(order.index(s) for s in known):
        return f"notifications out of order: {', '.join(seen)} (criu's order: {', '.join(order)})"
    missing = [s for s in NOTIFY_REQUIRED.get(action, ()) if s not in seen]
    if missing:
        return f"notification(s) {', '.join(missing)} never arrived (got: {', '.join(seen)})"
    return None


@dataclass
class RpcBackend:
    """criu actions through `criu swrk` and criu's RPC messages."""

    criu: Criu
    name: str = "rpc"
    notifications: list[tuple[str, str]] = field(default_factory=list)  # (action, script)

    def run(self, action: str, args: list[str], *, log: Path, stage: str, timeout: float,
            expect_fail: bool = False, env: dict[str, str] | None = None) -> CriuRun:
        if action not in _REQUESTS:
            raise CriuFailure(f"stage '{stage}': criu {action} has no RPC request "
                              "(criu's RPC offers dump, pre-dump, restore, page-server)")
        what = f"stage '{stage}': criu {action} over RPC"
        request = to_opts(action, args, messages()["criu_opts"])
        cmd = ["criu", "swrk", f"<{_REQUESTS[action]} {' '.join(args)}>"]
        start = time.monotonic()
        seen: list[str] = []
        with _DirFds(log.parent, request.images_dir) as fds, \
                self._service(log, what, env) as service:
            service.send(self._request(_REQUESTS[action], request.opts, log, fds))
            resp = self._answer_notifications(service, start + timeout, seen, action, log)
            rc = service.finish(min(timeout, 10.0))
        duration = time.monotonic() - start
        run = CriuRun(cmd, 0 if resp.success else 1, duration, log, _resp_text(resp))
        if rc is not None and rc < 0:
            raise CriuFailure(f"{what}: criu swrk crashed with signal "
                              f"{signal.Signals(-rc).name}\n{run.excerpt()}")
        if expect_fail:
            if resp.success:
                raise CriuFailure(f"{what} succeeded, but the test is marked crfail "
                                  "(criu was expected to fail cleanly)")
            return run
        if not resp.success:
            raise CriuFailure(f"{what} failed: {_resp_text(resp)}\n{run.excerpt()}")
        problem = notify_problem(action, seen)
        if problem:
            raise CriuFailure(f"{what}: {problem}")
        if action == "restore" and request.pidfile is not None:
            request.pidfile.write_text(f"{resp.restore.pid}\n")
        return run

    def start_page_server(self, args: list[str], *, log: Path, timeout: float,
                          env: dict[str, str] | None = None) -> RpcServer:
        """`criu page-server ARGS` as a child of a swrk service (PAGE_SERVER_CHLD); it is
        listening once the answer arrives."""
        what = "criu page-server over RPC"
        request = to_opts("page-server", args, messages()["criu_opts"])
        service = self._service(log, what, env)
        try:
            with _DirFds(log.parent, request.images_dir) as fds:
                req = self._request("PAGE_SERVER_CHLD", request.opts, log, fds)
                # No notifications here: the page server child and swrk would both read
                # our answer from the one socket, and swrk takes it as a bad request.
                req.opts.notify_scripts = False
                req.keep_open = True
                service.send(req)
                resp = self._answer_notifications(service, time.monotonic() + timeout, [],
                                                  "page-server", log)
            if not resp.success or not resp.ps.pid:
                raise CriuFailure(f"{what} did not start: {_resp_text(resp)}\n"
                                  f"{log_excerpt(log)}")
        except BaseException:
            service.close()
            raise
        return RpcServer(service, resp.ps.pid, resp.ps.port, log)

    def _request(self, type_name: str, opts: Any, log: Path, fds: tuple[int, int]) -> Any:
        opts.log_level = 4
        opts.log_file = log.name
        opts.notify_scripts = True
        # criu opens both through /proc/<our pid>/fd/N
        opts.work_dir_fd, opts.images_dir_fd = fds
        req = messages()["criu_req"](type=req_type(type_name))
        req.opts.CopyFrom(opts)
        return req

    def _service(self, log: Path, what: str, env: dict[str, str] | None) -> SwrkService:
        return SwrkService(self.criu.path, log.with_name(log.name + ".out"), what, env)

    def _answer_notifications(self, service: SwrkService, deadline: float, seen: list[str],
                              action: str, log: Path) -> Any:
        try:
            with open(log.with_name(log.name + ".notify"), "a") as record:
                while True:
                    resp = service.recv(deadline)
                    if resp.type != req_type("NOTIFY"):
                        return resp
                    script = resp.notify.script
                    seen.append(script)
                    self.notifications.append((action, script))
                    record.write(f"{script} pid={resp.notify.pid}\n")
                    service.send(messages()["criu_req"](type=req_type("NOTIFY"),
                                                        notify_success=True))
        except StageTimeout as exc:
            raise StageTimeout(f"{exc}\n{log_excerpt(log)}") from None


class _DirFds:
    """O_DIRECTORY fds of the work (log) and images directories, open while criu may
    still look them up."""

    def __init__(self, work_dir: Path, images_dir: Path):
        self.fds: list[int] = []
        try:
            for d in (work_dir, images_dir):
                self.fds.append(os.open(d, os.O_RDONLY | os.O_DIRECTORY))
        except OSError as exc:
            self.__exit__()
            raise CriuFailure(f"cannot open directory {exc.filename} for criu: "
                              f"{exc.strerror}") from None

    def __enter__(self) -> tuple[int, int]:
        return self.fds[0], self.fds[1]

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@dataclass
class RpcServer:
    """A criu page server started over RPC: a child of its swrk service."""

    service: SwrkService
    pid: int
    port: int
    log: Path

    def wait(self, timeout: float, stage: str) -> int:
        """WAIT_PID on the same connection: the page server's exit status must be 0."""
        req = messages()["criu_req"](type=req_type("WAIT_PID"), pid=self.pid)
        try:
            self.service.send(req)
            resp = self.service.recv(time.monotonic() + timeout)
        except StageTimeout:
            self.kill()
            raise StageTimeout(f"stage '{stage}': criu page-server (pid {self.pid}, over RPC) "
                               f"did not exit within {timeout:g}s (killed)\n"
                               f"{log_excerpt(self.log)}") from None
        status: int = resp.status
        self.service.finish(10.0)
        if not resp.success or status != 0:
            raise CriuFailure(f"stage '{stage}': criu page-server over RPC ended with wait "
                              f"status {status:#x} ({_resp_text(resp)})\n"
                              f"{log_excerpt(self.log)}")
        return status

    def blame(self, failure: Exception) -> None:
        """If the page server died before `failure`, raise a CriuFailure naming its death
        (it is swrk's child: dead but unreaped it is a zombie; WAIT_PID then answers)."""
        if _alive(self.pid):
            return
        try:
            self.service.send(messages()["criu_req"](type=req_type("WAIT_PID"), pid=self.pid))
            status = f"wait status {self.service.recv(time.monotonic() + 5).status:#x}"
        except ZdtmError:
            status = "status unknown"
        raise CriuFailure(f"stage 'page-server': criu page-server over RPC died ({status}) "
                          f"while criu still depended on it; what followed: {failure}\n"
                          f"{log_excerpt(self.log)}") from failure

    def kill(self) -> None:
        """The page server is swrk's child in swrk's session: one group kill ends both."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.service.close()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _resp_text(resp: Any) -> str:
    parts = [f"{req_type_name(resp.type)} success={resp.success}"]
    if resp.HasField("cr_errno"):
        parts.append(f"errno {resp.cr_errno} ({os.strerror(resp.cr_errno)})")
    if resp.HasField("cr_errmsg"):
        parts.append(f"criu says: {resp.cr_errmsg}")
    return ", ".join(parts)
