"""A crafted or damaged rewrite journal / stage in an image directory is refused cleanly:
an ImageError naming the file and entry, nothing changed inside or outside the directory."""

import json
import os
import shutil
from pathlib import Path

import pytest

from zdtmpy import cli
from zdtmpy.compress import Compression, compress_dir, decompress_dir, recover
from zdtmpy.compress.install import JOURNAL_TMP, STAGE
from zdtmpy.errors import ImageError
from zdtmpy.images.imageset import JOURNAL

DATA = Path(__file__).resolve().parent.parent / "data" / "criu-4.1.1" / "plain"
PAGE = Compression("page")


def tree(root):
    """Every entry under root: bytes of files, targets of links, 'dir' for directories."""
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(base, name)
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = ("link", os.readlink(p))
            elif p.is_dir():
                out[key] = "dir"
            elif p.is_file():
                out[key] = p.read_bytes()
            else:
                out[key] = "special"  # a FIFO: reading it would block
    return out


@pytest.fixture
def world(tmp_path):
    """tmp/outside/victim.txt beside tmp/images (a plain dump)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"precious")
    images = tmp_path / "images"
    shutil.copytree(DATA, images)
    return tmp_path, images


def journal(images, body):
    (images / JOURNAL).write_text(body if isinstance(body, str) else json.dumps(body))


def refused(tmp_path, images, match):
    """Every entry point refuses with an ImageError matching `match`; nothing changes."""
    before = tree(tmp_path)
    for call in (lambda: recover(images), lambda: compress_dir(images, PAGE),
                 lambda: decompress_dir(images)):
        with pytest.raises(ImageError, match=match):
            call()
        assert tree(tmp_path) == before


def test_entry_with_dotdot_cannot_rename_outside(world):
    tmp_path, images = world
    (images / STAGE).mkdir()
    (images / "victim.txt").write_bytes(b"attacker")
    journal(images, {"stage": STAGE, "files": ["../outside/victim.txt"], "backup": False})
    refused(tmp_path, images, r"entry 0 \('\.\./outside/victim\.txt'\): not a plain file name")
    assert (tmp_path / "outside" / "victim.txt").read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["/etc/passwd", "..", ".", "", "a/b", STAGE, JOURNAL])
def test_entry_names_must_be_plain(world, name):
    tmp_path, images = world
    (images / STAGE).mkdir()
    journal(images, {"files": ["pages-1.img", name], "backup": True})
    refused(tmp_path, images, r"entry 1 ")


def test_stage_symlink_to_outside_is_not_followed(world):
    tmp_path, images = world
    evil = tmp_path / "outside"
    (evil / "pages-1.img").write_bytes(b"outside file")
    os.symlink(evil, images / STAGE)
    journal(images, {"files": ["pages-1.img"], "backup": False})
    refused(tmp_path, images, rf"{STAGE}: leftover staging entry is a symlink")
    assert (evil / "pages-1.img").read_bytes() == b"outside file"


def test_staged_symlink_entry_is_refused(world):
    tmp_path, images = world
    (images / STAGE).mkdir()
    os.symlink(tmp_path / "outside" / "victim.txt", images / STAGE / "pages-1.img")
    journal(images, {"files": ["pages-1.img"], "backup": True})
    refused(tmp_path, images, r"entry 0 \('pages-1\.img'\): staged .* is a symlink")


def test_target_directory_is_refused(world):
    tmp_path, images = world
    (images / STAGE).mkdir()
    (images / STAGE / "x.img").write_bytes(b"new")
    (images / "x.img").mkdir()
    journal(images, {"files": ["x.img"], "backup": True})
    refused(tmp_path, images, r"x\.img in the image directory is a directory")


@pytest.mark.parametrize("body, match", [
    ({"files": None, "backup": True}, r'"files" must be a list'),
    ({"files": [5], "backup": True}, r"entry 0 \(5\): not a file name"),
    ({"files": ["pages-1.img"], "backup": "yes"}, r'"backup" must be true or false'),
    ({"files": ["a", "a"], "backup": True}, r"entry 1 \('a'\): listed twice"),
    ([1, 2], r"not a JSON object"),
    ("{", r"not valid JSON"),
    ("[" * 100000, r"not valid JSON"),
])
def test_malformed_journal(world, body, match):
    tmp_path, images = world
    (images / STAGE).mkdir()
    journal(images, body)
    refused(tmp_path, images, match)


def test_journal_of_wrong_type(world):
    tmp_path, images = world
    (images / JOURNAL).mkdir()
    refused(tmp_path, images, r"is a directory, not a regular file")
    os.rmdir(images / JOURNAL)
    os.symlink(tmp_path / "outside" / "victim.txt", images / JOURNAL)
    refused(tmp_path, images, r"is a symlink")
    os.unlink(images / JOURNAL)
    os.mkfifo(images / JOURNAL)  # must not hang in open()
    refused(tmp_path, images, r"is a FIFO")


def test_journal_tmp_directory(world):
    tmp_path, images = world
    (images / JOURNAL_TMP).mkdir()
    refused(tmp_path, images, rf"{JOURNAL_TMP}: leftover uncommitted journal is a directory")


def test_stage_of_wrong_type(world):
    tmp_path, images = world
    (images / STAGE).write_bytes(b"not a directory")
    refused(tmp_path, images, r"leftover staging entry is a regular file")


def test_cli_refuses_without_traceback(world, capsys):
    tmp_path, images = world
    (images / STAGE).mkdir()
    journal(images, {"files": ["../outside/victim.txt"], "backup": False})
    for command in ("compress", "decompress"):
        assert cli.main([command, str(images)]) == 1
        err = capsys.readouterr().err
        assert f"{images / JOURNAL}: entry 0" in err and "Traceback" not in err
    assert (tmp_path / "outside" / "victim.txt").read_bytes() == b"precious"


def test_symlinked_journal_tmp_removes_only_the_link(world):
    tmp_path, images = world
    os.symlink(tmp_path / "outside" / "victim.txt", images / JOURNAL_TMP)
    assert recover(images) is False
    assert not os.path.lexists(images / JOURNAL_TMP)
    assert (tmp_path / "outside" / "victim.txt").read_bytes() == b"precious"
