"""Synthetic page data for the compression benchmarks: zero, mixed, random, text, elf."""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import BenchError

PATTERNS = ("zero", "mixed", "random", "text", "elf")
PAGE = 4096
ENTRY_PAGES = 8192          # pages per pagemap entry of the synthetic layer (32 MiB)
PIECE = 4 << 20             # generation unit
POOL_BYTES = 32 << 20       # distinct bytes per generated pattern, tiled up to --size


def _text_pool(nbytes: int, rng: random.Random) -> bytes:
    words = ("alloc", "free", "page", "map", "unmap", "read", "write", "open", "close",
             "sync", "flush", "dirty", "clean", "mm", "vma", "pte", "pid", "tid", "fd",
             "sock", "pipe", "inet", "tcp", "udp", "restore", "dump", "criu", "zdtm", "lazy",
             "error", "warning", "info", "debug", "trace", "ok", "fail", "pass", "retry")
    out: list[str] = []
    n = 0
    t = 1700000000.0
    while n < nbytes:
        t += rng.random()
        line = (f"{t:.6f} host{rng.randrange(8)} svc[{rng.randrange(1, 40000)}]: "
                f"{' '.join(rng.choice(words) for _ in range(rng.randrange(3, 10)))} "
                f"addr=0x{rng.getrandbits(40):x} n={rng.randrange(1000)}\n")
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:nbytes]


def _elf_pool(nbytes: int) -> bytes:
    """System binaries concatenated (sorted walk of /usr/bin, /usr/lib), up to nbytes."""
    parts: list[bytes] = []
    n = 0
    for top in ("/usr/bin", "/usr/lib"):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(root, name)
                try:
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    with open(p, "rb") as f:
                        if f.read(4) != b"\x7fELF":
                            continue
                        f.seek(0)
                        data = f.read(nbytes - n)
                except OSError:
                    continue
                parts.append(data)
                n += len(data)
                if n >= nbytes:
                    return b"".join(parts)
    if not parts:
        raise BenchError("no ELF files found under /usr/bin and /usr/lib for the elf pattern")
    return b"".join(parts)


def _tile(pool: bytes, total: int) -> Iterator[memoryview]:
    """Pieces of `pool` repeated up to `total` bytes (LZ4 sees 64 KiB back at most, so the
    repetition of a multi-MiB pool is invisible to it)."""
    pos = 0
    mv = memoryview(pool)
    while pos < total:
        off = pos % len(pool)
        n = min(PIECE, total - pos, len(pool) - off)
        yield mv[off:off + n]
        pos += n


def pattern_pieces(name: str, total: int, seed: int = 1) -> Iterable[bytes | memoryview]:
    """The pattern's bytes, `total` long, as an iterable of bytes-like pieces."""
    rng = random.Random(f"{name}-{seed}")
    pool_bytes = min(POOL_BYTES, total)
    if name == "zero":
        zero = bytes(min(PIECE, total))
        return (zero[:min(PIECE, total - off)] for off in range(0, total, PIECE))
    if name == "random":
        return _tile(rng.randbytes(pool_bytes), total)
    if name == "text":
        return _tile(_text_pool(pool_bytes, rng), total)
    if name == "elf":
        pool = _elf_pool(pool_bytes)
        return _tile(pool[:len(pool) - len(pool) % PAGE] or pool, total)
    if name == "mixed":
        return _mixed(total, rng, pool_bytes)
    raise BenchError(f"unknown pattern {name!r} (one of {', '.join(PATTERNS)})")


def _mixed(total: int, rng: random.Random, pool_bytes: int) -> Iterator[bytes]:
    text = _text_pool(pool_bytes, rng)
    rand = rng.randbytes(pool_bytes)
    zero = bytes(64 * PAGE)
    pos = 0
    while pos < total:
        n = min(rng.randrange(1, 65) * PAGE, total - pos)
        r = rng.random()
        if r < 0.5:
            yield zero[:n]
        else:
            pool = text if r < 0.75 else rand
            off = rng.randrange(0, (len(pool) - n) // PAGE + 1) * PAGE
            yield pool[off:off + n]
        pos += n


def make_dataset(path: Path, name: str, total: int) -> int:
    """A plain (img_version 2) layer at path with `total` bytes of pattern `name` in one
    pagemap; returns the CRC-32 of its pages file."""
    from ..compress.synth import make_layer
    from ..images.pagemap import PE_PRESENT

    crc = 0
    pieces = iter(pattern_pieces(name, total))
    leftover = memoryview(b"")

    def take(nbytes: int) -> Iterator[memoryview]:  # nbytes of the stream, updating the CRC
        nonlocal crc, leftover
        while nbytes:
            if not leftover:
                leftover = memoryview(next(pieces)).cast("B")
            piece, leftover = leftover[:nbytes], leftover[nbytes:]
            crc = zlib.crc32(piece, crc)
            nbytes -= len(piece)
            yield piece

    entries = []
    vaddr = 0x7f0000000000
    npages = total // PAGE
    for first in range(0, npages, ENTRY_PAGES):
        n = min(ENTRY_PAGES, npages - first)
        entries.append((vaddr, n, PE_PRESENT, take(n * PAGE)))
        vaddr += (n + 1) * PAGE   # a one-page hole between entries
    make_layer(path, {1: entries})
    return crc


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


