"""The h, ns and uns flavors: the environment an upstream test gets, and the ns flavors' root.

An upstream test gets exactly what upstream's runner gives it: a fixed PATH, TMPDIR, and the
`ZDTM_*` variables of its flavor -- never the caller's environment (zdtmpy's own `ZDTM_CRIU`
means something else to upstream's ns.c, which bind-mounts it into the test root).

Flavor `ns`: the test library creates new PID, mount, net, IPC and UTS namespaces and
pivot_roots into `$ZDTM_ROOT`, with `$ZDTM_DEV` (a tmpfs with a few device nodes) as /dev.
As upstream's, a test's root is laid out like the tree's test/ directory: the test runs in
/zdtm/<subdir> (descs name paths such as `/zdtm/static/mnt_ext_manual.test`), next to
/bin, /lib, ... holding the libraries it needs (hard links of one copy per session). Each
test gets a root of its own, mounted with a fresh /dev in the test's private mount namespace
(mntns.py) at its worker's mount points, so nothing is mounted on the host.

Flavor `uns`: the same, and the test library also creates a user namespace (ZDTM_USERNS=1)
in which root is host uid 20000 (upstream's ns.c maps 0-19999 to 20000-39999). As upstream
does, the test's root and /dev are opened to everyone (the test makes `old/` and /dev/ptmx
there) and so is the test's directory (its pidfile and outfile).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ZdtmError

STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Upstream's unprivileged ids for tests not flagged suid (criu's tests use the same numbers).
UPSTREAM_UID, UPSTREAM_GID, UPSTREAM_GROUPS = "18943", "58467", "27495 48244"
ROOT_DIRS = ("bin", "sbin", "etc", "lib", "lib64", "dev", "tmp", "usr", "proc", "run")
CMD_TIMEOUT = 30
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def base_env(tmpdir: str) -> dict[str, str]:
    return {"PATH": STD_PATH, "TMPDIR": tmpdir, "HOME": "/root", "LANG": "C"}


def uid_env(as_root: bool, suid: bool) -> dict[str, str]:
    """Upstream runs a test not flagged suid as an unprivileged user, unless told otherwise."""
    if suid or as_root:
        return {}
    return {"ZDTM_UID": UPSTREAM_UID, "ZDTM_GID": UPSTREAM_GID, "ZDTM_GROUPS": UPSTREAM_GROUPS}


def lacks_cap_sys_resource() -> bool:
    """Root here may lack CAP_SYS_RESOURCE: criu then cannot dump a task of another uid."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return not (int(line.split()[1], 16) >> 24) & 1
    except (OSError, ValueError):
        pass
    return False


def _run(cmd: list[str]) -> None:
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ZdtmError(f"ns flavor setup: {' '.join(cmd)}: {exc}") from None
    if r.returncode:
        raise ZdtmError(f"ns flavor setup: {' '.join(cmd)} exited {r.returncode}: "
                        f"{(r.stderr or r.stdout).strip()[-500:]}")


@dataclass
class NsRoot:
    """The ns flavor's roots: a shared store of the binaries and libraries tests need, and per
    test a root laid out as upstream's (its directory at /zdtm/<subdir>), mounted in the
    test's private mount namespace."""

    directory: Path  # <results>/corpus-ns-root: the store; items/<name>/ are tests' roots
    mount_base: Path  # /tmp/zdtmpy-ns-<pid>: root/ and dev/, mount points in a test's ns only
    # file -> it and the libraries it loads
    _needs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def for_worker(cls, results: Path) -> NsRoot:
        base = Path(tempfile.gettempdir()) / f"zdtmpy-ns-{os.getpid()}"
        return cls(results.resolve() / "corpus-ns-root", base)

    @property
    def root(self) -> Path:
        return self.mount_base / "root"

    @property
    def dev(self) -> Path:
        return self.mount_base / "dev"

    @property
    def items(self) -> Path:
        return self.directory / "items"

    def env(self, userns: bool = False) -> dict[str, str]:
        env = {"ZDTM_NEWNS": "1", "ZDTM_ROOT": str(self.root), "ZDTM_DEV": str(self.dev),
               "PATH": STD_PATH}
        if userns:
            env["ZDTM_USERNS"] = "1"
        return env

    def open_for_userns(self, root: Path) -> None:
        """Upstream's uns flavor adds group and other rwx to the test's root; its /dev is
        0777 (the test links /dev/ptmx there as root of its user namespace). After enter()."""
        os.chmod(root, 0o777)
        os.chmod(self.dev, 0o777)

    def criu_opts(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(opts, dopts, ropts) upstream adds for this flavor."""
        return (("--root", str(self.root)), ("--external", "mnt[/dev]:ZDTM_DEV"),
                ("--external", f"mnt[ZDTM_DEV]:{self.dev}"))

    def prepare(self, root: Path, files: list[str]) -> None:
        """A test's root directory: upstream's top directories, and `files` with the
        libraries they load, hard links of the store's copies at their own paths."""
        self._construct()
        for d in ROOT_DIRS:
            (root / d).mkdir(parents=True, exist_ok=True)
            os.chmod(root / d, 0o777)
        for d in ("bin", "sbin", "lib", "lib64"):
            link = root / "usr" / d
            if not link.is_symlink():
                link.symlink_to(f"../{d}")
        for f in files:
            if f not in self._needs:
                self._needs[f] = [f, *_libraries(f)]
                for need in self._needs[f]:
                    self._copy_one(need)
            for need in self._needs[f]:
                dst = root / need.lstrip("/")
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.link(self.directory / need.lstrip("/"), dst)

    def enter(self, root: Path) -> None:
        """Mount a test's root and a fresh /dev at this worker's mount points. Call it in
        the test's private mount namespace: the mounts vanish with it."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.dev.mkdir(parents=True, exist_ok=True)
        _run(["mount", "--bind", str(root), str(self.root)])
        _run(["mount", "--make-private", str(self.root)])
        _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "zdtmpy-test-dev", str(self.dev)])
        self._make_dev()

    def _construct(self) -> None:
        """The store's directory (once, under a lock: workers build it together)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if (self.directory / ".constructed").exists():
                return
            self.items.mkdir(exist_ok=True)
            os.chmod(self.directory, 0o755)
            (self.directory / ".constructed").touch()
        finally:
            os.close(fd)

    def _make_dev(self) -> None:
        for d in ("pts", "net"):
            (self.dev / d).mkdir(mode=0o755, exist_ok=True)
        nodes = {"tty": os.makedev(5, 0), "null": os.makedev(1, 3)}
        for name in ("net/tun", "rtc"):
            with contextlib.suppress(OSError):
                st = os.stat(f"/dev/{name}")
                nodes[name] = st.st_rdev
        nodes["autofs"] = os.makedev(10, 235)
        for name, rdev in nodes.items():
            os.mknod(self.dev / name, 0o666 | stat.S_IFCHR, rdev)
            os.chmod(self.dev / name, 0o666)

    def teardown(self) -> list[str]:
        """Remove this worker's mount points (never mounted outside a test's namespace);
        returns what went wrong."""
        problems = []
        for mnt in (self.dev, self.root):
            if _mounted(mnt):  # an older zdtmpy mounted them in the host's namespace
                try:
                    _run(["umount", "-l", str(mnt)])
                except ZdtmError as exc:
                    problems.append(str(exc))
        for d in (self.dev, self.root, self.mount_base):
            with contextlib.suppress(OSError):
                d.rmdir()
        return problems

    def _copy_one(self, src: str) -> None:
        dst = self.directory / src.lstrip("/")
        if dst.exists():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(".tso", "", dst.parent)
        os.close(fd)
        try:
            shutil.copy2(os.path.realpath(src), tmp)
            os.rename(tmp, dst)  # atomic: parallel workers copy the same libraries
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


_aliases = itertools.count()


def short_alias(workdir: Path) -> Path:
    """A short symlink to a flavor-h test's directory, to start it in with PWD set to it.
    Upstream's tests name unix sockets by get_current_dir_name() (which takes $PWD) plus a
    file name, and sun_path holds 108 bytes: a long results path would not fit. The caller
    removes the link at cleanup."""
    tmp = Path(tempfile.gettempdir())
    n = next(_aliases)
    if n == 0:
        sweep_dead_aliases(tmp)
    link = tmp / f"zdtmpy-h-{os.getpid()}-{n}"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()  # a crashed run's, with our pid
    link.symlink_to(workdir)
    return link


def sweep_dead_aliases(tmp: Path) -> list[Path]:
    """Remove the aliases of runs whose worker died before its cleanup (SIGKILL, a killed
    xdist worker): our own symlinks named by a pid that no longer runs. Returns them."""
    gone = []
    for link in tmp.glob("zdtmpy-h-*-*"):
        try:
            pid = int(link.name.split("-")[2])
            st = link.lstat()
        except (IndexError, ValueError, OSError):
            continue
        if not stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or _runs(pid):
            continue
        with contextlib.suppress(OSError):
            link.unlink()
            gone.append(link)
    return gone


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounted(path: Path) -> bool:
    """A mount point in our namespace (os.path.ismount misses a bind of the same fs)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    target = str(path)
    return any(line.split()[4] == target for line in lines if len(line.split()) > 4)


def unmount_below(path: Path) -> list[str]:
    """Lazily unmount whatever a test mounted under its own directory (flavor h tests mount
    cgroups there and unmount them only when they exit normally)."""
    prefix = str(path).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = sorted({ln.split()[4] for ln in lines if len(ln.split()) > 4
                     and ln.split()[4].startswith(prefix)}, key=len, reverse=True)
    problems = []
    for p in points:
        try:
            _run(["umount", "-l", p])
        except ZdtmError as exc:
            problems.append(str(exc))
    return problems


def _libraries(binary: str) -> list[str]:
    """Shared libraries `ldd` names for a binary (none for a script or a static binary)."""
    try:
        r = subprocess.run(["ldd", binary], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return []
    libs = []
    for line in r.stdout.splitlines():
        m = _LDD_LINE.match(line)
        if m and "vdso" not in m.group(1):
            libs.append(m.group(1))
    return libs


def first_dep(alternatives: str) -> str | None:
    """A desc dep 'a|b': the first that exists (upstream's rule)."""
    for d in alternatives.split("|"):
        if os.access(d, os.F_OK):
            return d
    return None
