"""The command-line arguments the cycles build, as one criu_opts message.

The cycles speak criu's command line; the RPC back end turns the same argument list into
criu_opts so both back ends run exactly the same request. An option with no RPC field is
refused by name rather than dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CriuFailure

# flag -> criu_opts boolean field
_BOOLS = {
    "--leave-running": "leave_running",
    "--track-mem": "track_mem",
    "--auto-dedup": "auto_dedup",
    "--lazy-pages": "lazy_pages",
    "--tcp-established": "tcp_established",
    "--shell-job": "shell_job",
    "--file-locks": "file_locks",
    "--ext-unix-sk": "ext_unix_sk",
    "--link-remap": "link_remap",
    "--evasive-devices": "evasive_devices",
    "--force-irmap": "force_irmap",
    "--restore-sibling": "rst_sibling",
    "--weak-sysctls": "weak_sysctls",
    "--tcp-close": "tcp_close",
    "--leave-stopped": "leave_stopped",
}
# flags that take a value -> criu_opts string field
_STRINGS = {
    "--prev-images-dir": "parent_img",
    "--root": "root",
    "--freeze-cgroup": "freeze_cgroup",
}
_LISTS = {"--external": "external", "--enable-fs": "enable_fs", "--skip-mnt": "skip_mnt"}
_ALIASES = {"-t": "--tree", "-D": "--images-dir", "-d": "--restore-detached",
            "-j": "--shell-job", "-l": "--file-locks"}


@dataclass
class RpcRequest:
    """criu_opts plus what the client itself must do (write the pidfile)."""

    opts: Any  # criu_opts
    images_dir: Path
    pidfile: Path | None = None


def to_opts(action: str, args: list[str], opts_cls: type) -> RpcRequest:
    """criu_opts for `criu ACTION ARGS` (without -o / -v, which the back end sets)."""
    opts = opts_cls()
    opts.images_dir_fd = -1
    images = pidfile = None
    rest = list(args)

    def value(flag: str) -> str:
        if not rest:
            raise CriuFailure(f"criu {action} over RPC: option {flag} lacks its value")
        return rest.pop(0)

    while rest:
        raw = rest.pop(0)
        flag, eq, inline = raw.partition("=")
        if eq and flag.startswith("--"):
            rest.insert(0, inline)
        else:
            flag = raw
        flag = _ALIASES.get(flag, flag)
        if flag == "--tree":
            opts.pid = _int(action, flag, value(flag))
        elif flag == "--images-dir":
            images = Path(value(flag))  # passed as an fd: criu 4.1/4.2 readlink() a path
        elif flag == "--pidfile":
            pidfile = Path(value(flag))
        elif flag == "--restore-detached":
            continue  # the service always restores detached
        elif flag == "--page-server":
            opts.ps.SetInParent()
        elif flag == "--address":
            opts.ps.address = value(flag)
        elif flag == "--port":
            opts.ps.port = _int(action, flag, value(flag))
        elif flag in _BOOLS:
            setattr(opts, _BOOLS[flag], True)
        elif flag in _STRINGS:
            setattr(opts, _STRINGS[flag], value(flag))
        elif flag in _LISTS:
            getattr(opts, _LISTS[flag]).append(value(flag))
        else:
            raise CriuFailure(f"criu {action} over RPC: option {raw!r} has no criu_opts field "
                              "zdtmpy knows (run this test with --zdtm-criu-api cli)")
    if images is None:
        raise CriuFailure(f"criu {action} over RPC: no images directory (-D) given")
    return RpcRequest(opts, images, pidfile)


def _int(action: str, flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CriuFailure(f"criu {action} over RPC: {flag} wants a number, got {text!r}") \
            from None
