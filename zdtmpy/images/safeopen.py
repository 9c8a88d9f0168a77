"""Opening files of an image directory that came from another machine.

Every image file must be a regular file reached without following a link: a FIFO would hang
open() or read(), a directory or device gives confusing errors later, and a link could make
a rewrite read or replace something outside the directory. Each refusal is an ImageError
naming the file and what it is instead.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import ImageError

IMAGE_MAX = 256 << 20  # bytes of one metadata image (pagemap, inventory, ...) read at once

_KINDS = ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """'a FIFO', 'a directory', ... for an st_mode."""
    for test, what in _KINDS:
        if test(mode):
            return what
    return "a special file"


def not_regular(path: str | os.PathLike[str], mode: int) -> ImageError:
    return ImageError(f"{path}: is {file_kind(mode)}, not a regular file; refusing to "
                      "read it as an image file")


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of the regular file at path (no link followed, never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{path}: is a symlink; image files must be regular files") \
                from None
        raise ImageError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], limit: int = IMAGE_MAX) -> bytes:
    """The bytes of a regular file of at most `limit` bytes."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ImageError(f"{path}: {size} bytes, more than an image file of this kind "
                             f"may hold ({limit})")
        chunks = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if got > limit:
        raise ImageError(f"{path}: grew past {limit} bytes while being read")
    return b"".join(chunks)


def regular_size(path: str | os.PathLike[str]) -> int | None:
    """Size of the regular file at path, None when absent; ImageError for anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImageError(f"{path}: cannot inspect: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(path, st.st_mode)
    return st.st_size
