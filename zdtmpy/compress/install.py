"""All-or-nothing installation of a staged rewrite, with a journal as the commit point.

New files are written and fsynced in a staging directory inside the image directory (same
filesystem, so rename is atomic). Then a journal listing them is made durable: before it
exists the original set is untouched; once it exists, installation is rolled forward (by
this run or, after a crash, by recover()). Each step is idempotent.
"""

import json
import os
import shutil
from pathlib import Path

from ..errors import ImageError
from ..images.imageset import JOURNAL

STAGE = ".zdtmpy-stage"


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_stage(dirpath):
    """A fresh, empty staging directory (a leftover from an uncommitted run is discarded)."""
    stage = Path(dirpath) / STAGE
    if stage.exists():
        shutil.rmtree(stage)
    try:
        stage.mkdir()
    except OSError as exc:
        raise ImageError(f"{dirpath}: cannot create staging directory: {exc.strerror}") \
            from None
    return stage


def discard_stage(dirpath):
    shutil.rmtree(Path(dirpath) / STAGE, ignore_errors=True)


def install(dirpath, names, backup, crash_after=None):
    """Move staged `names` into dirpath, keeping originals as <name>.bak when `backup`.

    crash_after: test hook, stop (as a crash would) after installing that many files.
    """
    dirpath = Path(dirpath)
    stage = dirpath / STAGE
    for name in names:
        if not os.path.islink(stage / name):  # a staged symlink (e.g. `parent`): no data
            fsync_file(stage / name)
    fsync_dir(stage)
    tmp = dirpath / (JOURNAL + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"stage": STAGE, "files": list(names), "backup": bool(backup)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, dirpath / JOURNAL)  # commit point
    fsync_dir(dirpath)
    _apply(dirpath, crash_after)


def recover(dirpath):
    """Finish an interrupted install (True) or drop an uncommitted stage (False)."""
    dirpath = Path(dirpath)
    if (dirpath / JOURNAL).exists():
        _apply(dirpath)
        return True
    discard_stage(dirpath)
    try:
        os.unlink(dirpath / (JOURNAL + ".tmp"))
    except FileNotFoundError:
        pass
    return False


def _apply(dirpath, crash_after=None):
    journal_path = dirpath / JOURNAL
    try:
        journal = json.loads(journal_path.read_text())
        files, backup = journal["files"], journal["backup"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{journal_path}: unreadable rewrite journal ({exc}); the staged "
                         f"files are in {dirpath / STAGE}") from None
    stage = dirpath / STAGE
    for count, name in enumerate(files):
        if crash_after is not None and count >= crash_after:
            return
        src, dst = stage / name, dirpath / name
        if not os.path.lexists(src):  # lexists: a staged symlink may dangle from there
            continue  # installed before an interruption
        bak = dirpath / (name + ".bak")
        if backup and dst.exists() and not os.path.lexists(bak):
            os.link(dst, bak)  # the original inode lives on as .bak; never overwrites one
        os.rename(src, dst)
    fsync_dir(dirpath)
    os.unlink(journal_path)
    shutil.rmtree(stage, ignore_errors=True)
    fsync_dir(dirpath)
