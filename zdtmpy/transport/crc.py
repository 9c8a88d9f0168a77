"""The stream's CRC-32 (zlib's polynomial and values): zlib-ng's where installed, about 4x
zlib's here (a 1 GiB dump's 418 MB stream is checksummed once on capture and twice on
restore: the check before criu starts, and each record again as it is fed)."""

from __future__ import annotations

try:
    from zlib_ng.zlib_ng import crc32
except ImportError:   # a clone's venv from before the dependency: same values, slower
    from zlib import crc32

__all__ = ["crc32"]
