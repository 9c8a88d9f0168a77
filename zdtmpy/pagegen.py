"""The page generators of the C test library (zdtmpy/workloads/lib/pagegen.c), callable from Python.

The same C file is compiled into a cffi extension module (API mode, out of line) on first use,
into the hash-keyed cache shared with the workloads: ${ZDTMPY_CACHE:-~/.cache/zdtmpy}/pagegen/.
Importing this module compiles nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import sys
import sysconfig
import threading
from pathlib import Path
from types import ModuleType

PAGE_SIZE = 4096
# Same order as enum pg_gen in pagegen.h.
GENS: tuple[str, ...] = ("zero", "fill", "pattern", "random", "half", "alt")

_MODULE = "_zdtmpy_pagegen"
_CDEF = """
int pagegen_fill(int gen, uint64_t seed, uint64_t index, void *dst, size_t npages);
long pagegen_check(int gen, uint64_t seed, uint64_t index, const void *src, size_t npages);
"""
_EXT_FLAGS = ("-O2",)

_lock = threading.Lock()
_mod: ModuleType | None = None   # the built cffi extension, once loaded


def lib_dir(static_dir: Path | None = None) -> Path:
    from zdtmpy.build import default_static_dir

    return Path(static_dir or default_static_dir()) / "lib"


def _digest(src: Path, hdr: Path) -> str:
    import cffi

    h = hashlib.sha256()
    h.update(repr((_CDEF, _EXT_FLAGS, cffi.__version__, sys.implementation.cache_tag,
                   sysconfig.get_config_var("EXT_SUFFIX"), sysconfig.get_config_var("CC")))
             .encode())
    for f in (src, hdr):
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


def _build_module(tmp: Path, src: Path, ldir: Path) -> Path:
    """cffi emits the API-mode wrapper; the distutils compiler builds it with pagegen.c."""
    from distutils.errors import LinkError

    import cffi

    from zdtmpy.build import compile_sources, new_compiler
    from zdtmpy.errors import BuildError

    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    ffi.set_source(_MODULE, '#include "pagegen.h"')
    wrapper = tmp / f"{_MODULE}.c"
    with contextlib.redirect_stdout(io.StringIO()):  # cffi prints "generating ..."
        ffi.emit_c_code(str(wrapper))

    what = "zdtmpy.pagegen extension"
    cc, cap = new_compiler(what)
    objs = compile_sources(
        cc, cap, [wrapper, src], tmp / "obj", what,
        include_dirs=[str(ldir), sysconfig.get_paths()["include"]],
        extra_postargs=list(_EXT_FLAGS),
    )
    out = tmp / (_MODULE + str(sysconfig.get_config_var("EXT_SUFFIX")))
    try:
        cc.link_shared_object(objs, str(out))
    except LinkError:
        raise BuildError(f"{what}: linking {out.name} from {src} failed:\n{cap.output()}") \
            from None
    return out


def _load() -> ModuleType:
    """Build (once per source hash, under a lock) and import the extension module."""
    global _mod
    if _mod is not None:
        return _mod
    with _lock:
        if _mod is not None:
            return _mod
        from zdtmpy.build import build_cached
        from zdtmpy.errors import BuildError

        ldir = lib_dir()
        src, hdr = ldir / "pagegen.c", ldir / "pagegen.h"
        if not src.is_file() or not hdr.is_file():
            raise BuildError(f"zdtmpy.pagegen: missing {src} or {hdr}")
        filename = _MODULE + str(sysconfig.get_config_var("EXT_SUFFIX"))
        path = build_cached("pagegen", _digest(src, hdr), filename,
                            lambda tmp: _build_module(tmp, src, ldir))
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        if spec is None or spec.loader is None:
            raise BuildError(f"zdtmpy.pagegen: cannot load the built module {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _mod = mod
        return mod


def _gen_number(gen: str) -> int:
    try:
        return GENS.index(gen)
    except ValueError:
        raise ValueError(f"unknown page generator {gen!r}: expected one of "
                         f"{', '.join(GENS)}") from None


def _check_args(seed: int, index: int, npages: int) -> None:
    if not 0 <= seed < 1 << 64 or not 0 <= index < 1 << 64:
        raise ValueError(f"seed {seed} and index {index} must fit in an unsigned 64-bit integer")
    if npages < 0:
        raise ValueError(f"npages must be >= 0, got {npages}")


def generate(gen: str, seed: int, index: int, npages: int) -> bytes:
    """npages pages of generator `gen`: page i is pagegen(gen, seed, index + i)."""
    g = _gen_number(gen)
    _check_args(seed, index, npages)
    mod = _load()
    buf = bytearray(npages * PAGE_SIZE)
    if npages:
        mod.lib.pagegen_fill(g, seed, index, mod.ffi.from_buffer(buf), npages)
    return bytes(buf)


def first_mismatch(gen: str, seed: int, index: int, npages: int,
                   data: bytes | bytearray | memoryview) -> int:
    """-1 when data (bytes-like, >= npages pages) matches the generator, else the first bad page."""
    g = _gen_number(gen)
    _check_args(seed, index, npages)
    view = memoryview(data).cast("B")
    if len(view) < npages * PAGE_SIZE:
        raise ValueError(f"data has {len(view)} bytes, fewer than {npages} pages")
    if not npages:
        return -1
    mod = _load()
    return int(mod.lib.pagegen_check(g, seed, index, mod.ffi.from_buffer(view), npages))


__all__ = ["GENS", "PAGE_SIZE", "first_mismatch", "generate"]
