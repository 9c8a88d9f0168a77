"""Image transforms between dump and restore: the compression axis of the matrix.

With compression on, the dump is compressed by the layer, verified, read back through the
oracle, offered to a criu that predates compression (which must refuse it), decompressed,
compared with the original dump, and only then restored.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from . import Run

if TYPE_CHECKING:
    from ..workload import Manifest

COMPRESS_FEATURE = "compress"


def link_copy(src: Path, dst: Path) -> Path:
    """A copy by hard links: the converters stage new files and rename, never write in place."""
    shutil.copytree(src, dst, copy_function=os.link, symlinks=True)
    return dst


def prepare_for_restore(r: Run, images: Path, manifest: Manifest) -> Path:
    """Return the directory criu restores from, after the variant's transforms."""
    if not r.variant.compression.enabled:
        return images
    from ..compress import compress_dir, decompress_dir, verify_dir

    zdir = r.path("img-compressed")
    with r.stage("compress"):
        link_copy(images, zdir)
        compress_dir(zdir, r.variant.compression, in_place=True)
        problems = verify_dir(zdir)
        if problems:
            r.fail("zdtmpy verify of the compressed images:\n  "
                   + "\n  ".join(str(p) for p in problems))
    r.check_images(zdir, manifest, layer_note=" (compressed images)")
    if not r.criu.has_feature(COMPRESS_FEATURE):
        refuse_compressed(r, zdir)
    with r.stage("decompress"):
        decompress_dir(zdir, in_place=True)
        diffs = compare_dumps(images, zdir)
        if diffs:
            r.fail("decompressed images differ from the original dump:\n  " + "\n  ".join(diffs))
    return zdir


def refuse_compressed(r: Run, zdir: Path) -> None:
    """A criu without compression support must refuse a version-3 set, not misread it."""
    with r.stage("refuse-compressed"):
        pidfile = r.path("refused.pid")
        run = r.criu_run("restore", ["-D", str(zdir), "-d", "--pidfile", str(pidfile)],
                         "restore-refused.log", "refuse-compressed", expect_fail=True)
        log = run.log.read_text(errors="replace")
        if "version" not in log.lower():
            r.fail(f"criu {r.criu.version_str} refused the compressed images, but not for their "
                   f"image version; see {run.log}")
        if pidfile.exists():
            r.fail("criu restored a process from compressed images it cannot read")


def compare_dumps(original: Path, other: Path) -> list[str]:
    """Pages files byte-identical, pagemaps and inventory equal as parsed messages."""
    from ..images.compare import same_image

    diffs = []
    names = sorted(p.name for p in original.iterdir() if p.is_file() and not p.is_symlink())
    for name in names:
        a, b = original / name, other / name
        if not b.exists():
            diffs.append(f"{name}: missing after decompress")
        elif name.startswith("pages-"):
            if not _same_bytes(a, b):
                diffs.append(f"{name}: pages differ from the original dump")
        elif name.startswith(("pagemap-", "inventory")):
            if not same_image(a, b):
                diffs.append(f"{name}: parsed messages differ from the original dump")
    return diffs


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True
