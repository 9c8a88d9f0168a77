"""All-or-nothing installation of a staged rewrite, with a journal as the commit point.

New files are written and fsynced in a staging directory inside the image directory (same
filesystem, so rename is atomic). Then a journal listing them is made durable: before it
exists the original set is untouched; once it exists, installation is rolled forward (by
this run or, after a crash, by recover()). Each step is idempotent.

Image directories come from other machines, so a journal, a stage or a leftover journal.tmp
found there is untrusted: every name must be a plain file name, nothing is followed through
a link, and all of it is checked before the first rename (a refusal changes nothing).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Union

from ..errors import ImageError
from ..images.imageset import JOURNAL, PARENT_LINK
from ..images.safeopen import file_kind

STAGE = ".zdtmpy-stage"
JOURNAL_TMP = JOURNAL + ".tmp"
JOURNAL_MAX = 1 << 20  # bytes; a real journal lists a few dozen names
RESERVED = frozenset((STAGE, JOURNAL, JOURNAL_TMP))

PathLike = Union[str, "os.PathLike[str]"]


def fsync_dir(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def plain_name_problem(name: object) -> str | None:
    """Why `name` is not a plain file name of an image directory, or None."""
    if not isinstance(name, str):
        return f"not a file name ({type(name).__name__})"
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return "not a plain file name (empty, '.', '..', or contains '/' or NUL)"
    if name in RESERVED:
        return "names zdtmpy's own bookkeeping file"
    return None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImageError(f"{path}: cannot inspect: {exc.strerror}") from None


def _stage_present(dirpath: Path) -> bool:
    """True when a real staging directory exists; ImageError when the name is something else."""
    st = _lstat(dirpath / STAGE)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{dirpath / STAGE}: leftover staging entry is {file_kind(st.st_mode)}, "
                         "not a directory; refusing to touch it (remove it by hand); "
                         "nothing was changed")
    return True


def _drop_journal_tmp(dirpath: Path) -> None:
    tmp = dirpath / JOURNAL_TMP
    st = _lstat(tmp)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{tmp}: leftover uncommitted journal is a directory; refusing to "
                         "touch it (remove it by hand); nothing was changed")
    os.unlink(tmp)  # a link itself is removed, never its target


def new_stage(dirpath: PathLike) -> Path:
    """A fresh, empty staging directory (a leftover from an uncommitted run is discarded)."""
    dirpath = Path(dirpath)
    stage = dirpath / STAGE
    try:
        if _stage_present(dirpath):
            shutil.rmtree(stage)  # never follows links inside it
        stage.mkdir()
    except OSError as exc:
        raise ImageError(f"{dirpath}: cannot create staging directory {STAGE}: "
                         f"{exc.strerror}") from None
    return stage


def discard_stage(dirpath: PathLike) -> None:
    """Remove the staging directory if there is one; anything else by that name is left."""
    stage = Path(dirpath) / STAGE
    st = _lstat(stage)
    if st is not None and stat.S_ISDIR(st.st_mode):
        shutil.rmtree(stage, ignore_errors=True)


def install(dirpath: PathLike, names: Iterable[str], backup: bool,
            crash_after: int | None = None) -> None:
    """Move staged `names` into dirpath, keeping originals as <name>.bak when `backup`.

    crash_after: test hook, stop (as a crash would) after installing that many files.
    """
    dirpath = Path(dirpath)
    names = list(names)
    stage = dirpath / STAGE
    tmp = dirpath / JOURNAL_TMP
    try:
        for name in names:
            if not os.path.islink(stage / name):  # a staged symlink (e.g. `parent`): no data
                fsync_file(stage / name)
        fsync_dir(stage)
        with open(tmp, "w") as f:
            json.dump({"stage": STAGE, "files": names, "backup": bool(backup)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, dirpath / JOURNAL)  # commit point
    except OSError as exc:  # before the commit point: the original set is untouched
        discard_stage(dirpath)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ImageError(f"{dirpath}: cannot commit the rewrite, nothing was changed: "
                         f"{exc.filename or tmp}: {exc.strerror}") from None
    fsync_dir(dirpath)
    _apply(dirpath, crash_after)


def recover(dirpath: PathLike) -> bool:
    """Finish an interrupted install (True) or drop an uncommitted stage (False).

    ImageError, with nothing changed, when the leftovers are not what zdtmpy writes.
    """
    dirpath = Path(dirpath)
    if os.path.lexists(dirpath / JOURNAL):
        _apply(dirpath)
        return True
    if _stage_present(dirpath):
        shutil.rmtree(dirpath / STAGE, ignore_errors=True)
    _drop_journal_tmp(dirpath)
    return False


def read_journal(dirpath: Path) -> tuple[list[str], bool]:
    """The journal's (files, backup), every name checked; ImageError naming file and entry."""
    path = dirpath / JOURNAL

    def refuse(why: str) -> ImageError:
        return ImageError(f"{path}: {why}; refusing to recover the interrupted rewrite, "
                          "nothing was changed")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse("is a symlink") from None
        raise refuse(f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"is {file_kind(st.st_mode)}, not a regular file")
        if st.st_size > JOURNAL_MAX:
            raise refuse(f"is {st.st_size} bytes, more than a journal can be ({JOURNAL_MAX})")
        raw = os.read(fd, JOURNAL_MAX + 1)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        journal = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise refuse(f"not valid JSON ({exc})") from None
    if not isinstance(journal, dict):
        raise refuse("not a JSON object")
    files, backup = journal.get("files"), journal.get("backup")
    if not isinstance(files, list):
        raise refuse(f'"files" must be a list of file names, not {type(files).__name__}')
    if not isinstance(backup, bool):
        raise refuse(f'"backup" must be true or false, not {type(backup).__name__}')
    seen: set[str] = set()
    for index, name in enumerate(files):
        why = plain_name_problem(name)
        if why is None and name in seen:
            why = "listed twice"
        if why is not None:
            raise refuse(f"entry {index} ({name!r}): {why}")
        seen.add(name)
    return files, backup


def _check_entries(dirpath: Path, files: list[str]) -> None:
    """Every staged file is a regular file (or the parent link) and every target replaceable."""
    stage = dirpath / STAGE
    journal = dirpath / JOURNAL
    for index, name in enumerate(files):
        def refuse(why: str, index: int = index, name: str = name) -> ImageError:
            return ImageError(f"{journal}: entry {index} ({name!r}): {why}; refusing to "
                              "recover the interrupted rewrite, nothing was changed")

        src = _lstat(stage / name)
        if src is not None:
            link_ok = name == PARENT_LINK and stat.S_ISLNK(src.st_mode)
            if not (stat.S_ISREG(src.st_mode) or link_ok):
                raise refuse(f"staged {STAGE}/{name} is {file_kind(src.st_mode)}")
        dst = _lstat(dirpath / name)
        if dst is not None and stat.S_ISDIR(dst.st_mode):
            raise refuse(f"{name} in the image directory is a directory")


def _apply(dirpath: Path, crash_after: int | None = None) -> None:
    files, backup = read_journal(dirpath)
    has_stage = _stage_present(dirpath)
    if has_stage:
        _check_entries(dirpath, files)
    dir_fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if has_stage:
            _move_all(dirpath, dir_fd, files, backup, crash_after)
            if crash_after is not None and crash_after < len(files):
                return
        os.fsync(dir_fd)
        os.unlink(JOURNAL, dir_fd=dir_fd)
        if has_stage:
            shutil.rmtree(dirpath / STAGE, ignore_errors=True)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _move_all(dirpath: Path, dir_fd: int, files: list[str], backup: bool,
              crash_after: int | None) -> None:
    """Rename each staged name into the directory, by descriptor: no path is re-resolved."""
    stage_fd = os.open(STAGE, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=dir_fd)
    try:
        for count, name in enumerate(files):
            if crash_after is not None and count >= crash_after:
                return
            try:
                os.stat(name, dir_fd=stage_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # installed before an interruption
            bak = name + ".bak"
            try:
                if backup and _exists_at(dir_fd, name) and not _exists_at(dir_fd, bak):
                    # the original inode lives on as .bak; never overwrites one
                    os.link(name, bak, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                            follow_symlinks=False)
                os.rename(name, name, src_dir_fd=stage_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                raise ImageError(f"{dirpath / JOURNAL}: installing {name}: {exc.strerror}; "
                                 "run the command again to finish") from None
    finally:
        os.close(stage_fd)


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
