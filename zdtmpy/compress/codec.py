"""Block compression: zero / raw / LZ4 decisions for one page or one region at a time.

A block's stored size says how to read it back: 0 = all zero (nothing stored), the block's
byte size = stored raw, anything else = a raw LZ4 block (no frame, no size prefix).
"""

import ctypes
import hashlib
import re
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path

import lz4
import lz4.block

from ..errors import ImageError
from ..images.blocks import decode_block, zeros
from ..images.pagemap import MAX_REGION_BYTES, PAGE_SIZE

DEFAULT_REGION_BYTES = 256 << 10
ACCELERATION_MIN, ACCELERATION_MAX = 1, 65537
MODES = {"off": 0, "page": 1, "region": 2}  # value = inventory `compress` field

__all__ = [
    "DEFAULT_REGION_BYTES",
    "MODES",
    "CompressionSpec",
    "decode_block",
    "decode_chunk",
    "decode_parts",
    "encode_block",
    "encode_chunk",
    "encode_parts",
    "parse_size",
    "raw_limit",
]


def parse_size(text):
    """'64K', '256k', '4M', '4096' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ImageError(f"bad size {text!r}: use bytes or a number with K or M (e.g. 256K)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20}[m.group(2).lower()]
    return int(m.group(1)) * mult


@dataclass(frozen=True)
class CompressionSpec:
    """How to store pages: mode "off", "page" (one block per page) or "region"."""

    mode: str = "page"
    region_size: int = DEFAULT_REGION_BYTES
    acceleration: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ImageError(f"unknown compression mode {self.mode!r} (off, page or region)")
        if not ACCELERATION_MIN <= self.acceleration <= ACCELERATION_MAX:
            raise ImageError(f"acceleration {self.acceleration} is outside "
                             f"{ACCELERATION_MIN}..{ACCELERATION_MAX}")
        rs = self.region_size
        if rs <= 0 or rs % PAGE_SIZE or rs > MAX_REGION_BYTES:
            raise ImageError(f"region size {rs} must be a multiple of {PAGE_SIZE} up to "
                             f"{MAX_REGION_BYTES >> 20} MiB")

    @property
    def block_pages(self):
        return self.region_size // PAGE_SIZE if self.mode == "region" else 1

    @property
    def inventory_mode(self):
        return MODES[self.mode]

    def stamp(self, inv):
        """Mark an inventory entry as describing a layer compressed this way (FORMAT.md 4:
        version 3, field 15, and field 16 only in region mode)."""
        inv.img_version = 3
        inv.compress = self.inventory_mode
        if self.mode == "region":
            inv.compress_region_size = self.region_size
        else:
            inv.ClearField("compress_region_size")


def raw_limit(nbytes):
    """LZ4 output of at least this many bytes is not worth it: store raw (7/8 rule)."""
    return -(-nbytes * 7 // 8)


def encode_block(data, acceleration=1):
    """(stored size, stored bytes) for one block given as bytes."""
    n = len(data)
    if zeros(n).startswith(data):  # equal lengths: an equality test without a copy
        return 0, b""
    try:
        out = lz4.block.compress(data, mode="fast", acceleration=acceleration,
                                 store_size=False)
    except (lz4.block.LZ4BlockError, MemoryError, OverflowError):
        return n, bytes(data)
    if len(out) >= raw_limit(n) or not out:
        return n, bytes(data)
    return len(out), out


def encode_parts(data, block_bytes, acceleration=1):
    """Encode consecutive blocks of `data` (any bytes-like object; the last block may be
    shorter) without copying it: returns (sizes, parts) where parts are the stored pieces
    in order, LZ4 output as bytes and raw blocks as memoryviews into `data` (so `data`
    must not change until the parts are written).

    This is the hot loop (one page per iteration in per-page mode): blocks are memoryview
    slices, and zero blocks are found with zeros.startswith(block), a memcmp without a copy.
    An all-zero input is recognised with one comparison.
    """
    mv = memoryview(data).cast("B") if not isinstance(data, memoryview) or \
        data.format != "B" or data.ndim != 1 else data
    n = len(mv)
    if zeros(n).startswith(mv):
        return [0] * -(-n // block_bytes), []
    sizes, parts = [], []
    add_size, add_part = sizes.append, parts.append
    compress = lz4.block.compress
    zero_full = zeros(block_bytes).startswith
    limit_full = raw_limit(block_bytes)
    for off in range(0, n, block_bytes):
        block = mv[off:off + block_bytes]
        size = len(block)
        if size == block_bytes:
            if zero_full(block):
                add_size(0)
                continue
            limit = limit_full
        else:
            if zeros(size).startswith(block):
                add_size(0)
                continue
            limit = raw_limit(size)
        try:
            out = compress(block, mode="fast", acceleration=acceleration, store_size=False)
        except (lz4.block.LZ4BlockError, MemoryError, OverflowError):
            out = None
        if out is None or len(out) >= limit or not out:
            add_size(size)
            add_part(block)
        else:
            add_size(len(out))
            add_part(out)
    return sizes, parts


def encode_chunk(data, block_bytes, acceleration=1):
    """Encode consecutive blocks of `data` (bytes-like; the last block may be shorter).

    Returns (sizes, payload bytes). See encode_parts.
    """
    sizes, parts = encode_parts(data, block_bytes, acceleration)
    return sizes, b"".join(parts)


def decode_parts(buf, sizes, block_bytes, total_bytes, first_block=0):
    """Decode consecutive blocks stored back to back in `buf` without joining them.

    Returns a list of pieces in order: an int n for a run of n zero bytes (zero blocks,
    consecutive ones merged), else a bytes-like object (LZ4 output, or a memoryview into
    `buf` for a raw block, so `buf` must not change until the pieces are used).
    Raises ImageError naming the block index (counted from first_block).
    """
    out = []
    add = out.append
    pos = 0
    mv = memoryview(buf)
    left = total_bytes
    for i, size in enumerate(sizes):
        nbytes = min(block_bytes, left)
        left -= nbytes
        if size == 0:
            if out and type(out[-1]) is int:
                out[-1] += nbytes
            else:
                add(nbytes)
            continue
        stored = mv[pos:pos + size]
        pos += size
        if size == nbytes:
            if len(stored) != size:
                raise ImageError(f"block {first_block + i}: stored block is short "
                                 f"({len(stored)} of {size} bytes)")
            add(stored)
            continue
        try:  # LZ4 (or an oversized size): the shared checks, located here
            add(decode_block(stored, size, nbytes))
        except ImageError as exc:
            raise ImageError(f"block {first_block + i}: {exc}") from None
    return out


def decode_chunk(buf, sizes, block_bytes, total_bytes, first_block=0):
    """Inverse of encode_chunk: decoded bytes of consecutive blocks stored back to back.

    total_bytes is the decoded length (the last block may be shorter than block_bytes).
    Raises ImageError naming the block index (counted from first_block).
    """
    nat = native()
    if nat is not None and nat.batch_decode is not None and len(sizes) > 1:
        src = buf
        if type(src) is not bytes and type(src) is not bytearray:
            src = memoryview(src).cast("B")
            if src.readonly:
                src = bytes(src)
        out = bytearray(min(total_bytes, len(sizes) * block_bytes))
        if _decode_batch(nat, src, len(src), sizes, block_bytes, total_bytes, out,
                         False) is not None:
            return bytes(out)
    parts = decode_parts(buf, sizes, block_bytes, total_bytes, first_block)
    if len(parts) == 1 and type(parts[0]) is bytes:
        return parts[0]
    return b"".join(zeros(p) if type(p) is int else p for p in parts)


# -- in-place block coding for the streaming paths ----------------------------------------
#
# lz4.block allocates its output for every call (a fresh 256 KiB+ buffer per region, whose
# pages are faulted in each time). The LZ4 library that python-lz4 carries exports its C
# API, so the streaming paths call it through ctypes (the GIL is released during each call)
# to code blocks into reused buffers. To produce the very same bytes as
# lz4.block.compress(mode="fast", store_size=False), compression does what python-lz4
# does: LZ4_resetStream on a fresh LZ4_stream_t then LZ4_compress_fast_continue into a
# buffer of LZ4_compressBound bytes. A self-test against lz4.block at first use turns the
# native path off (falling back to lz4.block) if anything differs or is missing.


class _Native:
    def __init__(self):
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
        self.state_size = lib.LZ4_sizeofState()
        self._tls = threading.local()
        self.fn_ptrs = tuple(ctypes.cast(f, vp).value
                             for f in (self.reset, self.compress, self.bound))
        self.decompress_ptr = ctypes.cast(self.decompress, vp).value
        self.batch = None   # lz4batch.c's encoder, when it could be built (see _load_batch)
        self.batch_decode = None   # and its decoder

    def state(self):
        st = getattr(self._tls, "state", None)
        if st is None:
            st = self._tls.state = ctypes.create_string_buffer(self.state_size + 64)
            self._tls.addr = (ctypes.addressof(st) + 63) & ~63
        return self._tls.addr


_native = None
_native_lock = threading.Lock()
_BATCH_SOURCE = Path(__file__).with_name("lz4batch.c")
_BATCH_LIB = "liblz4batch.so"
batch_unavailable = None   # why lz4batch.c is not in use (None: in use, or not tried yet)


def _load_batch():
    """lz4batch.c built once per source hash into zdtmpy's build cache, loaded with ctypes
    (which releases the GIL for the whole call): one call per chunk instead of two per
    block. Needs a C compiler; without one, encode_into loops over blocks in Python."""
    import sys
    import sysconfig

    from ..build import build_cached, compile_sources, compiler_command, new_compiler
    from ..errors import BuildError

    what = "zdtmpy LZ4 block encoder"
    src = _BATCH_SOURCE
    h = hashlib.sha256(src.read_bytes())
    h.update(repr((compiler_command(), sysconfig.get_config_var("CFLAGS"),
                   sys.platform)).encode())

    def build(tmp):
        from distutils.errors import LinkError

        cc, cap = new_compiler(what)
        objs = compile_sources(cc, cap, [src], tmp / "obj", what, extra_postargs=["-O2"])
        out = tmp / _BATCH_LIB
        try:
            cc.link_shared_object(objs, str(out))
        except LinkError:
            raise BuildError(f"{what}: linking {out.name} failed:\n{cap.output()}") from None
        return out

    lib = ctypes.CDLL(str(build_cached("lz4batch", h.hexdigest()[:20], _BATCH_LIB, build)))
    enc, dec = lib.zdtm_encode_blocks, lib.zdtm_decode_blocks
    vp, lg = ctypes.c_void_p, ctypes.c_long
    enc.argtypes = [vp, lg, vp, lg, lg, ctypes.c_int, vp, vp, vp, vp, vp, vp]
    enc.restype = lg
    dec.argtypes = [vp, lg, vp, lg, lg, lg, vp, ctypes.c_int, vp, vp]
    dec.restype = lg
    return enc, dec


def _self_test(nat):
    import random
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


def _self_test_batch(nat):
    """The batch encoder against encode_parts (lz4.block) on mixed chunks."""
    import random
    rng = random.Random(11)
    text = b"".join(b"row %d: some repetitive words of text\n" % i for i in range(8000))
    pages = [text[:PAGE_SIZE], rng.randbytes(PAGE_SIZE), bytes(PAGE_SIZE),
             rng.randbytes(PAGE_SIZE // 2) + bytes(PAGE_SIZE // 2), text[5000:5000 + PAGE_SIZE]]
    data = b"".join(pages[i % 5] if i % 7 else pages[(i * 3) % 5] for i in range(70))
    data += text[:1000]   # a short last block
    for block in (PAGE_SIZE, 4 * PAGE_SIZE, 64 << 10):
        for acc in (1, 5):
            want = encode_parts(data, block, acc)
            src = bytearray(data)
            out = bytearray(len(data) + nat.bound(block) + 64)
            sizes, parts = _encode_batch(nat, src, len(data), out, block, acc)
            if sizes != want[0] or b"".join(parts) != b"".join(want[1]):
                return False
            if acc != 1:
                continue
            # and back: the batch decoder against decode_parts (lz4.block), also on
            # damaged input (both must refuse the same blocks)
            stored = b"".join(want[1])
            lz4_at = [i for i, z in enumerate(sizes) if 0 < z < min(block, len(data) - i *
                                                                    block)]
            variants = [stored]
            for i in lz4_at[:1] + lz4_at[-1:]:
                at = sum(sizes[:i])
                for fill in (b"\xff", b"\x00", b"\x1f"):
                    variants.append(stored[:at] + fill * sizes[i] + stored[at + sizes[i]:])
            variants.append(stored[:-1])   # short
            for v in variants:
                try:
                    want_pieces = _merge_pieces(decode_parts(v, sizes, block, len(data)))
                except ImageError:
                    want_pieces = None
                back = bytearray(len(data) + 1)
                got = _decode_batch(nat, bytearray(v), len(v), sizes, block, len(data), back,
                                    False)
                if want_pieces is None:
                    if got is not None:
                        return False
                elif got is None or _merge_pieces(got) != want_pieces:
                    return False
    return True


def _merge_pieces(pieces):
    """Pieces (as from decode_parts) with adjacent data pieces joined, as bytes."""
    out = []
    for p in pieces:
        if type(p) is int:
            out.append(p)
        elif out and type(out[-1]) is bytes:
            out[-1] += bytes(p)
        else:
            out.append(bytes(p))
    return out


def native():
    """The _Native LZ4 entry points, or None where they cannot be used (lz4.block then)."""
    global _native
    if _native is None:
        with _native_lock:
            if _native is None:
                try:
                    nat = _Native()
                    ok = _self_test(nat)
                except (OSError, AttributeError, TypeError, ValueError):
                    ok = False
                if ok:
                    _attach_batch(nat)
                _native = nat if ok else False
    return _native or None


def _attach_batch(nat):
    global batch_unavailable
    try:
        nat.batch, nat.batch_decode = _load_batch()
        if not _self_test_batch(nat):
            nat.batch = nat.batch_decode = None
            batch_unavailable = "its output differs from lz4.block's"
    except Exception as exc:  # noqa: BLE001 - only a speedup: any failure means the slow path
        nat.batch = nat.batch_decode = None
        batch_unavailable = f"{type(exc).__name__}: {exc}"


def _encode_batch(nat, src, n, out, block_bytes, acceleration):
    """encode_into through lz4batch.c: one C call for the whole of src[:n]."""
    nblocks = -(-n // block_bytes)
    sizes = array("I", bytes(4 * nblocks))
    runs = array("q", bytes(24 * nblocks))
    src_c = ctypes.c_char.from_buffer(src)   # keeps the buffers pinned while in use
    out_c = ctypes.c_char.from_buffer(out)
    reset, compress, bound = nat.fn_ptrs
    k = nat.batch(ctypes.addressof(src_c), n, ctypes.addressof(out_c), len(out), block_bytes,
                  acceleration, nat.state(), reset, compress, bound, sizes.buffer_info()[0],
                  runs.buffer_info()[0])
    del src_c, out_c
    if k < 0:
        raise ValueError(f"encode_into: output buffer of {len(out)} bytes is too small")
    smv, omv = memoryview(src), memoryview(out)
    parts = []
    add = parts.append
    for i in range(0, 3 * k, 3):
        off = runs[i + 1]
        add((omv if runs[i] else smv)[off:off + runs[i + 2]])
    return sizes.tolist(), parts


def encode_into(src, n, out, block_bytes, acceleration=1):
    """encode_parts for the first n bytes of the bytearray `src`, LZ4 output going into
    the bytearray `out` (at least n + LZ4_compressBound(block_bytes) bytes). Returns
    (sizes, parts): parts are memoryviews into src (raw) and out (LZ4). Falls back to
    encode_parts when the native path is off."""
    nat = native()
    smv = memoryview(src)[:n]
    if nat is None:
        return encode_parts(smv, block_bytes, acceleration)
    if len(smv) != n:
        raise ValueError(f"encode_into: {n} bytes asked, the buffer holds {len(src)}")
    if zeros(n).startswith(smv):
        return [0] * -(-n // block_bytes), []
    if nat.batch is not None:
        return _encode_batch(nat, src, n, out, block_bytes, acceleration)
    return _encode_loop(nat, src, smv, n, out, block_bytes, acceleration)


def _encode_loop(nat, src, smv, n, out, block_bytes, acceleration):
    """encode_into one block at a time (no lz4batch): two ctypes calls per block."""
    olen = len(out)
    src_c = ctypes.c_char.from_buffer(src)   # keeps the buffers pinned while in use
    out_c = ctypes.c_char.from_buffer(out)
    sa, oa = ctypes.addressof(src_c), ctypes.addressof(out_c)
    omv = memoryview(out)
    state = nat.state()
    reset, compress, bound = nat.reset, nat.compress, nat.bound
    sizes, parts = [], []
    add_size, add_part = sizes.append, parts.append
    zero_full = zeros(block_bytes).startswith
    limit_full, bound_full = raw_limit(block_bytes), bound(block_bytes)
    opos = 0
    for off in range(0, n, block_bytes):
        block = smv[off:off + block_bytes]
        size = len(block)
        if size == block_bytes:
            if zero_full(block):
                add_size(0)
                continue
            limit, cap = limit_full, bound_full
        else:
            if zeros(size).startswith(block):
                add_size(0)
                continue
            limit, cap = raw_limit(size), bound(size)
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


_NO_BYTES = bytearray(1)   # stands for an empty input buffer (ctypes needs an address)


def _decode_batch(nat, src, stored_len, sizes, block_bytes, total_bytes, out, zero_fill,
                  out_offset=0):
    """Decode blocks through lz4batch.c: one C call for the whole chunk, every block going
    to its own place in `out` (a bytearray), from out_offset on. src: stored bytes as
    bytes, a bytearray or a writable memoryview (stored_len of them). Zero blocks are
    zero-filled when zero_fill, else skipped. Returns the pieces as decode_parts does
    (ints for zero runs, memoryviews into `out` for data, adjacent data merged), or None
    when a block is bad (the caller decodes again in Python to say which)."""
    nblocks = len(sizes)
    end = min(total_bytes, nblocks * block_bytes)
    if end <= 0:
        return None   # nothing to decode: the Python loop handles odd calls
    if out_offset + end > len(out) or stored_len > len(src):
        raise ValueError("decode_into: buffers smaller than the sizes given")
    try:
        sz = sizes if type(sizes) is array and sizes.typecode == "I" else array("I", sizes)
    except OverflowError:
        return None
    runs = array("q", bytes(16 * nblocks))
    if type(src) is bytes:
        src_c = src
        sa = ctypes.cast(ctypes.c_char_p(src), ctypes.c_void_p).value
    else:
        src_c = ctypes.c_char.from_buffer(src if stored_len else _NO_BYTES)
        sa = ctypes.addressof(src_c)
    out_c = ctypes.c_char.from_buffer(out)
    k = nat.batch_decode(sa, stored_len, sz.buffer_info()[0], nblocks, block_bytes, end,
                         ctypes.addressof(out_c) + out_offset, 1 if zero_fill else 0,
                         nat.decompress_ptr, runs.buffer_info()[0])
    del src_c, out_c
    if k < 0:
        return None
    omv = memoryview(out)
    pieces = []
    add = pieces.append
    prev = 0
    for i in range(0, 2 * k, 2):
        off = runs[i]
        if off > prev:
            add(off - prev)
        prev = off + runs[i + 1]
        add(omv[out_offset + off:out_offset + prev])
    if end > prev:
        add(end - prev)
    return pieces


def decode_span_into(buf, sizes, block_bytes, total_bytes, out, out_offset=0):
    """Decode consecutive blocks stored back to back in `buf` (bytes or bytearray) straight
    into the bytearray `out` from out_offset on, skipping zero blocks (out must hold zeros
    there already). Returns False, having written nothing it matters, when lz4batch.c is
    not in use or a block is bad: the caller then decodes in Python (which says why)."""
    nat = native()
    if nat is None or nat.batch_decode is None:
        return False
    return _decode_batch(nat, buf, len(buf), sizes, block_bytes, total_bytes, out, False,
                         out_offset) is not None


def decode_into(src, stored_len, sizes, block_bytes, total_bytes, out, first_block=0):
    """decode_parts for stored bytes at the start of the bytearray `src`, LZ4 blocks being
    decoded into the bytearray `out` (at least total_bytes long). Pieces are ints (zero
    runs) or memoryviews into src (raw) and out (LZ4); with lz4batch.c, every data piece
    is in out (raw blocks copied there), adjacent ones merged."""
    nat = native()
    smv = memoryview(src)[:stored_len]
    if nat is None:
        return decode_parts(smv, sizes, block_bytes, total_bytes, first_block)
    if len(smv) != stored_len or len(out) < total_bytes:
        raise ValueError("decode_into: buffers smaller than the sizes given")
    if nat.batch_decode is not None:
        pieces = _decode_batch(nat, src, stored_len, sizes, block_bytes, total_bytes, out,
                               False)
        if pieces is not None:
            return pieces
        return decode_parts(smv, sizes, block_bytes, total_bytes, first_block)  # says why
    src_c = ctypes.c_char.from_buffer(src)
    out_c = ctypes.c_char.from_buffer(out)
    sa, oa = ctypes.addressof(src_c), ctypes.addressof(out_c)
    omv = memoryview(out)
    decompress = nat.decompress
    pieces = []
    add = pieces.append
    pos = dpos = 0
    left = total_bytes
    for i, size in enumerate(sizes):
        nbytes = min(block_bytes, left)
        left -= nbytes
        if size == 0:
            if pieces and type(pieces[-1]) is int:
                pieces[-1] += nbytes
            else:
                add(nbytes)
            continue
        if pos + size > stored_len:
            raise ImageError(f"block {first_block + i}: stored block is short "
                             f"({max(0, stored_len - pos)} of {size} bytes)")
        if size == nbytes:
            add(smv[pos:pos + size])
        elif size > nbytes:
            raise ImageError(f"block {first_block + i}: compressed_size {size} is larger "
                             f"than the block ({nbytes} bytes)")
        else:
            r = decompress(sa + pos, oa + dpos, size, nbytes)
            if r != nbytes:
                raise ImageError(f"block {first_block + i}: LZ4 block of {size} bytes is "
                                 f"corrupt (does not decode to {nbytes} bytes)")
            add(omv[dpos:dpos + nbytes])
            dpos += nbytes
        pos += size
    del src_c, out_c
    return pieces
