"""LZ4 through ctypes, into reused buffers: the C library python-lz4 carries exports its API.

lz4.block allocates its output for every call (a fresh 256 KiB+ buffer per region, whose
pages are faulted in each time); these paths code blocks into buffers the caller reuses, with
the GIL released during each call. To produce the very same bytes as
lz4.block.compress(mode="fast", store_size=False), compression does what python-lz4 does:
LZ4_resetStream on a fresh LZ4_stream_t, then LZ4_compress_fast_continue into a buffer of
LZ4_compressBound bytes. A self-test against lz4.block at first use turns the native paths
off (python-lz4 then) if anything differs or is missing.

`helper()` is the one accessor of the native state (loaded once, lock-protected).
"""

from __future__ import annotations

import ctypes
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import lz4
import lz4.block

from .algorithm import Buffer, EncodedParts, Piece
from .blocks import raw_limit, zeros
from .spec import DEFAULT_REGION_BYTES, PAGE_SIZE


class Native:
    """The LZ4 C entry points of python-lz4's own library, plus lz4batch.c's when built."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(lz4.block._block.__file__)
        if lib.LZ4_versionNumber() != lz4.library_version_number():
            raise OSError("LZ4 library version differs from python-lz4's")
        vp, i = ctypes.c_void_p, ctypes.c_int
        self.reset = lib.LZ4_resetStream
        self.reset.argtypes, self.reset.restype = [vp], None
        self.compress = lib.LZ4_compress_fast_continue
        self.compress.argtypes, self.compress.restype = [vp, vp, vp, i, i, i], i
        self.decompress = lib.LZ4_decompress_safe
        self.decompress.argtypes, self.decompress.restype = [vp, vp, i, i], i
        self.bound = lib.LZ4_compressBound
        self.bound.argtypes, self.bound.restype = [i], i
        self.state_size: int = lib.LZ4_sizeofState()
        self._tls = threading.local()
        self.fn_ptrs = tuple(ctypes.cast(f, vp).value
                             for f in (self.reset, self.compress, self.bound))
        self.decompress_ptr = ctypes.cast(self.decompress, vp).value
        # lz4batch.c's encoder and decoder, when they could be built (see lz4batch.py)
        self.batch: Callable[..., int] | None = None
        self.batch_decode: Callable[..., int] | None = None
        self.batch_all_zero: Callable[..., int] | None = None
        self.batch_packed: Callable[..., int] | None = None
        self.batch_problem: str | None = None  # why lz4batch.c is not in use
        self.batch_marker: Path | None = None   # lz4batch.passed_marker, once loaded

    def state(self) -> int:
        """This thread's LZ4_stream_t (64-byte aligned)."""
        st = getattr(self._tls, "state", None)
        if st is None:
            st = self._tls.state = ctypes.create_string_buffer(self.state_size + 64)
            self._tls.addr = (ctypes.addressof(st) + 63) & ~63
        addr: int = self._tls.addr
        return addr


class _Helper:
    """The native state: not tried yet (None), unusable (False) or loaded."""

    def __init__(self) -> None:
        self.native: Any = None
        self.lock = threading.Lock()

    def get(self) -> Native | None:
        if self.native is None:
            with self.lock:
                if self.native is None:
                    self.native = _load()
        return self.native or None

    def disable(self) -> None:
        """Use python-lz4 only from now on (tests compare the paths)."""
        self.native = False


HELPER = _Helper()


def helper() -> Native | None:
    """The native LZ4 entry points, or None where they cannot be used (python-lz4 then)."""
    return HELPER.get()


def batch_problem() -> str | None:
    """Why lz4batch.c is not in use (None: in use, or not tried yet)."""
    nat = HELPER.native
    if nat is False:
        return "the native LZ4 binding is not in use"
    return nat.batch_problem if nat else None


def _load() -> Any:
    from .lz4batch import attach, verify

    try:
        nat = Native()
        if attach(nat):   # both self-tests passed before with these very binaries
            return nat
        ok = self_test(nat)
    except (OSError, AttributeError, TypeError, ValueError):
        return False
    if not ok:
        return False
    verify(nat)
    return nat


def self_test(nat: Native) -> bool:
    """The binding against lz4.block, both ways, on a few kinds of data."""
    rng = random.Random(7)
    text = b"".join(b"line %d of a page, text-like and compressible\n" % i
                    for i in range(6000))
    samples = [text[:PAGE_SIZE], rng.randbytes(PAGE_SIZE), text[:DEFAULT_REGION_BYTES],
               text[:40000] + rng.randbytes(9000) + bytes(20000), text[:1000],
               rng.randbytes(100) * 600]
    for acc in (1, 3):
        for data in samples:
            want = lz4.block.compress(data, mode="fast", acceleration=acc, store_size=False)
            src = bytearray(data)
            dst = bytearray(nat.bound(len(data)) + 16)
            out = bytearray(len(data))
            sa = ctypes.addressof(ctypes.c_char.from_buffer(src))
            da = ctypes.addressof(ctypes.c_char.from_buffer(dst))
            oa = ctypes.addressof(ctypes.c_char.from_buffer(out))
            st = nat.state()
            nat.reset(st)
            n = nat.compress(st, sa, da, len(data), nat.bound(len(data)), acc)
            if bytes(dst[:n]) != want:
                return False
            if nat.decompress(da, oa, n, len(data)) != len(data) or out != data:
                return False
    return True


def encode_loop(nat: Native, src: bytearray, n: int, out: bytearray, block_bytes: int,
                acceleration: int) -> EncodedParts:
    """encode_into one block at a time (no lz4batch.c): two ctypes calls per block."""
    smv = memoryview(src)[:n]
    olen = len(out)
    src_c = ctypes.c_char.from_buffer(src)   # keeps the buffers pinned while in use
    out_c = ctypes.c_char.from_buffer(out)
    sa, oa = ctypes.addressof(src_c), ctypes.addressof(out_c)
    omv = memoryview(out)
    state = nat.state()
    reset, compress, bound = nat.reset, nat.compress, nat.bound
    sizes: list[int] = []
    parts: list[bytes | memoryview] = []
    add_size, add_part = sizes.append, parts.append
    zero_full = zeros(block_bytes).startswith
    # LZ4 gets room for less than the 7/8 limit: it gives up on a block that would be
    # stored raw anyway as soon as its output cannot fit (see lz4batch.c)
    limit_full = raw_limit(block_bytes)
    cap_full = min(limit_full - 1, bound(block_bytes))
    opos = 0
    for off in range(0, n, block_bytes):
        block = smv[off:off + block_bytes]
        size = len(block)
        if size == block_bytes:
            if zero_full(block):
                add_size(0)
                continue
            limit, cap = limit_full, cap_full
        else:
            if zeros(size).startswith(block):
                add_size(0)
                continue
            limit = raw_limit(size)
            cap = min(limit - 1, bound(size))
        if opos + cap > olen:   # never let C write past the buffer
            raise ValueError(f"encode_into: output buffer of {olen} bytes is too small")
        reset(state)
        r = compress(state, sa + off, oa + opos, size, cap, acceleration)
        if r <= 0 or r >= limit:
            add_size(size)
            add_part(block)
        else:
            add_size(r)
            add_part(omv[opos:opos + r])
            opos += r
    del src_c, out_c
    return sizes, parts


def address(buf: Buffer) -> tuple[object, int]:
    """(an object keeping `buf` pinned, its address) for passing a buffer to C. bytes are
    read in place; other buffers must be writable."""
    if type(buf) is bytes:
        return buf, ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value or 0
    pin = ctypes.c_char.from_buffer(buf if len(buf) else _NO_BYTES)
    return pin, ctypes.addressof(pin)


_NO_BYTES = bytearray(1)   # stands for an empty buffer (ctypes needs an address)


def decode_loop(nat: Native, src: Buffer, stored_len: int, sizes: Sequence[int],
                block_bytes: int, total_bytes: int, out: bytearray,
                out_offset: int) -> list[Piece] | None:
    """decode_into one block at a time (no lz4batch.c): every data block to its place in
    `out`; None at the first bad block (the caller says why)."""
    end = min(total_bytes, len(sizes) * block_bytes)
    if out_offset + end > len(out) or stored_len > len(src):
        raise ValueError("decode_into: buffers smaller than the sizes given")
    smv, omv = memoryview(src), memoryview(out)
    src_pin, sa = address(src)
    out_pin, oa = address(out)
    oa += out_offset
    decompress = nat.decompress
    pieces: list[Piece] = []
    run = -1   # where the current run of data blocks started (in out, from out_offset)
    pos = dpos = 0
    for size in sizes:
        nbytes = min(block_bytes, end - dpos)
        if size == 0:
            if run >= 0:
                pieces.append(omv[out_offset + run:out_offset + dpos])
                run = -1
            last = pieces[-1] if pieces else None
            if type(last) is int:
                pieces[-1] = last + nbytes
            else:
                pieces.append(nbytes)
        else:
            if pos + size > stored_len or size > nbytes:
                return None
            if size == nbytes:
                omv[out_offset + dpos:out_offset + dpos + size] = smv[pos:pos + size]
            elif decompress(sa + pos, oa + dpos, size, nbytes) != nbytes:
                return None
            if run < 0:
                run = dpos
            pos += size
        dpos += nbytes
    if run >= 0:
        pieces.append(omv[out_offset + run:out_offset + dpos])
    del src_pin, out_pin
    return pieces
