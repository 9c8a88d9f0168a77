"""zdtmpy's cache directory, shared by every pytest-xdist worker and run, and by
ci/provision-criu.sh (criu builds), the workload builder and the codec's native helper."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """${ZDTMPY_CACHE:-${XDG_CACHE_HOME:-~/.cache}/zdtmpy}."""
    env = os.environ.get("ZDTMPY_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zdtmpy"


def compiler_command() -> list[str]:
    """The C compiler: $CC, else the one Python was built with, else gcc. Here rather than in
    build.py: a cached product's digest needs it, and a process that finds the product
    built (the codec's native helper, at every compress) need not import the builder."""
    import shlex
    import sysconfig

    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "gcc"
    return shlex.split(cc)


def cached_product(kind: str, digest: str, filename: str) -> Path:
    """Where build.build_cached puts the product of `kind` built from `digest`."""
    return cache_root() / kind / digest / filename


def criu_build(version: str) -> Path | None:
    """The criu binary ci/provision-criu.sh built for `version` (e.g. "4.2.1"), if any."""
    path = cache_root() / "criu" / version / "criu" / "criu"
    return path if path.is_file() else None
