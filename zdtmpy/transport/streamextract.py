"""extract: a stream back into an image directory, all-or-nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .streamformat import (
    BLOCKS,
    CLOSE,
    DATA,
    OPEN,
    StreamError,
    StreamReader,
)


@dataclass
class ExtractResult:
    files: dict[str, int]  # name -> size as carried by the stream (plain bytes)
    layout: str    # compression layout of the stream
    compressed: bool = False  # the directory was written compressed (in the stream's mode)


# name -> (staging path, its open file)
Staged = dict[str, tuple[Path, BinaryIO]]


def extract(src: BinaryIO, outdir: str | os.PathLike[str], where: str,
            decompress: bool = False) -> ExtractResult:
    """Write the stream read from binary file object `src` into `outdir` as image files.

    All-or-nothing: files are staged as .NAME.part and renamed only after the end record;
    on any error every staged file is removed. The stream carries criu's files as criu
    wrote them (pages possibly block-encoded): a compressed stream's directory is then laid
    out in CRIU's compressed format, in the stream's mode, by zdtmpy.compress.compress_dir
    (its pagemap entries decide the blocks); with decompress it stays plain (version 2)."""
    outdir = Path(outdir)
    staged: Staged = {}
    done: list[str] = []
    reader = StreamReader(src, where)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        for rec in reader:
            if rec.type == OPEN:
                final = outdir / rec.name
                if final.exists() or final.is_symlink():
                    raise StreamError(f"{where}: {final} already exists; refusing to "
                                      "overwrite it")
                part = outdir / f".{rec.name}.part"
                staged[rec.name] = (part, open(part, "xb"))  # noqa: SIM115
            elif rec.type in (DATA, BLOCKS):
                staged[rec.name][1].write(rec.data(where))
            elif rec.type == CLOSE:
                staged[rec.name][1].close()
        _check_pages(reader.closed, staged, where)
        for name, (part, _) in staged.items():
            os.rename(part, outdir / name)
            done.append(name)
        result = ExtractResult(dict(reader.closed), reader.header.compression.layout)
        if not decompress and reader.header.enabled:
            from ..compress import compress_dir

            compress_dir(outdir, reader.header.compression, in_place=True)
            result.compressed = True
    except OSError as exc:
        _discard(staged, done, outdir)
        raise StreamError(f"{where}: extracting into {outdir}: {exc.strerror or exc} "
                          f"({exc.filename or ''})") from None
    except BaseException:
        _discard(staged, done, outdir)
        raise
    return result


def _check_pages(sizes: dict[str, int], staged: Staged, where: str) -> None:
    """Before anything is installed: each pages file holds what its pagemap describes."""
    from ..images.safeopen import read_regular
    from .streamcheck import PAGEMAP, pagemap_summary, pages_mismatches

    pagemaps = {name: pagemap_summary(read_regular(part), f"{where}: {name}")
                for name, (part, _) in staged.items() if PAGEMAP.fullmatch(name)}
    problems = pages_mismatches(pagemaps, sizes)
    if problems:
        raise StreamError(f"{where}: refusing to extract, nothing was installed: "
                          + "; ".join(problems))


def _discard(staged: Staged, done: list[str], outdir: Path) -> None:
    for part, fobj in staged.values():
        fobj.close()
        _unlink(part)
    for name in done:
        _unlink(outdir / name)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
