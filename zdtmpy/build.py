"""Building C sources through cffi's compiler machinery (setuptools' distutils compiler),
once per hash of sources and flags, into a cache shared by every pytest-xdist worker.

Used for the workload executables (below) and for the pagegen extension (pagegen.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .builtin import workloads_dir
from .cachedir import cache_root as cache_root  # re-exported (tests)
from .cachedir import cached_product
from .cachedir import compiler_command as compiler_command  # re-exported
from .errors import BuildError

if TYPE_CHECKING:
    from distutils.ccompiler import CCompiler

# -Werror: a warning in a workload is a bug in the test, not something to scroll past.
CFLAGS: tuple[str, ...] = ("-O2", "-Wall", "-Werror")
LDFLAGS: tuple[str, ...] = ()
COMPILE_TIMEOUT = 120  # seconds for one compiler or linker command

def default_static_dir() -> Path:
    """The package's built-in workloads (zdtmpy/workloads)."""
    return workloads_dir()


class _Captured:
    """A distutils compiler whose commands run with their output captured (not on our stderr)."""

    def __init__(self, what: str):
        self.what = what
        self.log: list[str] = []

    def spawn(self, argv: Iterable[str], **kwargs: Any) -> None:  # as CCompiler.spawn
        from distutils.errors import DistutilsExecError

        cmd = list(argv)
        try:
            res = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", check=False,
                timeout=COMPILE_TIMEOUT,
            )
        except OSError as e:
            raise DistutilsExecError(f"cannot run {cmd[0]}: {e}") from None
        except subprocess.TimeoutExpired:
            self.log.append("$ " + shlex.join(cmd) + f"\n(killed after {COMPILE_TIMEOUT}s)")
            raise DistutilsExecError(f"{cmd[0]} did not finish within {COMPILE_TIMEOUT}s") \
                from None
        self.log.append("$ " + shlex.join(cmd) + ("\n" + res.stdout if res.stdout else ""))
        if res.returncode:
            raise DistutilsExecError(f"{cmd[0]} exited with status {res.returncode}")

    def output(self) -> str:
        return "\n".join(self.log).rstrip()


def new_compiler(what: str,
                 exe_flags: Sequence[str] | None = None) -> tuple[CCompiler, _Captured]:
    """(compiler, capture): setuptools' distutils CCompiler with captured output.

    With exe_flags, the compiler is set to `$CC exe_flags` (standalone executables); without,
    it keeps Python's own configuration (extension modules: -fPIC, -shared, Python's flags).
    """
    from distutils.ccompiler import new_compiler as _new
    from distutils.sysconfig import customize_compiler

    import setuptools  # type: ignore[import-untyped]  # noqa: F401  (distutils on 3.12+)

    cc = _new()
    customize_compiler(cc)
    if exe_flags is not None:
        cmd = compiler_command()
        cc.set_executables(  # lists are accepted (the stubs say str)
            compiler=cmd + list(exe_flags), compiler_so=cmd + list(exe_flags),  # type: ignore[arg-type]
            linker_exe=cmd + list(LDFLAGS),  # type: ignore[arg-type]
        )
    cap = _Captured(what)
    # replacing a method of this one instance: the stubs type it as a plain attribute
    cc.spawn = cap.spawn  # type: ignore[method-assign, assignment]
    return cc, cap


def compile_sources(cc: CCompiler, cap: _Captured, sources: Iterable[Path], objdir: Path,
                    what: str, **kw: Any) -> list[str]:
    """Compile one source at a time so that a BuildError names the file that failed."""
    from distutils.errors import CompileError

    objects: list[str] = []
    for src in sources:
        try:
            objects += cc.compile([str(src)], output_dir=str(objdir), **kw)
        except CompileError:
            raise BuildError(
                f"{what}: compiling {src} failed:\n{cap.output()}"
            ) from None
    return objects


@contextlib.contextmanager
def build_lock(lockpath: Path) -> Iterator[None]:
    """Exclusive fcntl lock: one builder per hash across processes (xdist workers, runs)."""
    lockpath.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lockpath, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_cached(kind: str, digest: str, filename: str,
                 build: Callable[[Path], Path]) -> Path:
    """<cache>/<kind>/<digest>/<filename>, built once by build(tmpdir) -> Path in tmpdir.

    The result appears by renaming a complete temporary directory, so a reader that sees the
    file sees all of it; the lock keeps two processes from building the same thing twice.
    """
    target = cached_product(kind, digest, filename)
    final_dir = target.parent
    base = final_dir.parent
    if target.exists():
        return target
    with build_lock(base / f"{digest}.lock"):
        if target.exists():
            return target
        if final_dir.exists():  # half-removed or foreign leftovers: start over
            shutil.rmtree(final_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=base))
        try:
            built = build(tmp)
            if built != tmp / filename:
                os.replace(built, tmp / filename)
            for junk in tmp.iterdir():  # keep only the product
                if junk.name != filename:
                    shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
            os.rename(tmp, final_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sources(name: str, static_dir: Path) -> list[Path]:
    main = static_dir / f"{name}.c"
    if not main.is_file():
        raise BuildError(f"workload {name}: no source {main}")
    lib = static_dir / "lib"
    return [main] + sorted(lib.glob("*.c"))


def workload_digest(name: str, static_dir: Path) -> str:
    """Hash of everything that goes into the executable: sources, headers, compiler, flags."""
    h = hashlib.sha256()
    h.update(repr((name, compiler_command(), CFLAGS, LDFLAGS)).encode())
    lib = static_dir / "lib"
    files = _sources(name, static_dir) + sorted(lib.glob("*.h")) + sorted(static_dir.glob("*.h"))
    for f in files:
        h.update(f"\0{f.relative_to(static_dir)}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


def build_workload(name: str, static_dir: str | os.PathLike[str] | None = None) -> Path:
    """Build <static_dir>/<name>.c + lib/*.c (default: the built-in workloads) into a cached
    executable and return its path.

    Cached under ${ZDTMPY_CACHE:-~/.cache/zdtmpy}/workloads/<hash>/<name>; safe when several
    processes build at once.  Raises BuildError naming the source, with the compiler output.
    """
    sdir = Path(static_dir) if static_dir is not None else default_static_dir()
    sdir = sdir.resolve()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise BuildError(f"workload {name!r}: not a valid workload name")
    digest = workload_digest(name, sdir)

    def build(tmp: Path) -> Path:
        from distutils.errors import LinkError

        what = f"workload {name}"
        cc, cap = new_compiler(what, CFLAGS)
        objs = compile_sources(cc, cap, _sources(name, sdir), tmp / "obj", what,
                               include_dirs=[str(sdir)])
        try:
            cc.link_executable(objs, name, output_dir=str(tmp))
        except LinkError:
            raise BuildError(f"{what}: linking {sdir / (name + '.c')} failed:\n"
                             f"{cap.output()}") from None
        return tmp / name

    return build_cached("workloads", digest, name, build)


