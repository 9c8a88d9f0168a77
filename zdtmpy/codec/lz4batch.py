"""lz4batch.c: a whole chunk of blocks per C call (ctypes releases the GIL for all of it).

Built once per source hash into zdtmpy's build cache and checked against python-lz4 before
use; without a compiler (or when the check fails) the per-block ctypes loop is used. A pass
is remembered next to the built library for these very binaries (passed_marker), so later
processes skip the ~10-20 ms of self-tests.
"""

from __future__ import annotations

import ctypes
import hashlib
import random
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from ..errors import ImageError
from .algorithm import Buffer, EncodedParts, Piece
from .blocks import BlockCodec, zeros
from .lz4block import PythonLZ4
from .lz4native import Native, address
from .spec import PAGE_SIZE

SOURCE = Path(__file__).with_name("lz4batch.c")
LIBRARY = "liblz4batch.so"


def attach(nat: Native) -> bool:
    """Give `nat` the batch entry points, or a reason why not. True when both self-tests
    (the binding's and verify()'s) passed before with these very binaries: none to run."""
    try:
        nat.batch, nat.batch_decode, nat.batch_all_zero, nat.batch_packed, lib = _load()
        nat.batch_marker = passed_marker(lib)
        return nat.batch_marker.exists()
    except Exception as exc:  # noqa: BLE001 - only a speedup: any failure means the slow path
        _disable(nat, f"{type(exc).__name__}: {exc}")
        return False


def verify(nat: Native) -> None:
    """The batch coder against python-lz4 (after the binding's own self-test passed): a
    failure turns it off with the reason, a pass is remembered (passed_marker)."""
    if nat.batch is None:
        return
    try:
        ok = self_test(nat)
    except Exception as exc:  # noqa: BLE001 - only a speedup: any failure means the slow path
        _disable(nat, f"{type(exc).__name__}: {exc}")
        return
    if not ok:
        _disable(nat, "its output differs from lz4.block's")
        return
    if nat.batch_marker is not None:
        try:   # an empty file: it is complete the moment it exists
            nat.batch_marker.touch()
        except OSError:
            pass   # a read-only cache: the tests run again next time


def _disable(nat: Native, why: str) -> None:
    nat.batch = nat.batch_decode = nat.batch_all_zero = nat.batch_packed = None
    nat.batch_marker = None
    nat.batch_problem = why


def passed_marker(lib: Path) -> Path:
    """The file whose presence says the self-tests passed with this library, this
    python-lz4 binary and these self-tests: next to the library in the build cache, named
    by a hash of all of them (a new python-lz4, or a change here, is another name). Whoever
    can write there can replace the library itself: it adds no trust."""
    import lz4

    block_so = Path(lz4.block._block.__file__)
    st = block_so.stat()
    h = hashlib.sha256(repr((str(lib), str(block_so), st.st_size, st.st_mtime_ns, st.st_ino,
                             lz4.__version__, lz4.library_version_number())).encode())
    for src in (Path(__file__), Path(__file__).with_name("lz4native.py")):
        h.update(src.read_bytes())
    return lib.parent / f"selftest-passed-{h.hexdigest()[:24]}"


def _load() -> tuple[Callable[..., int], Callable[..., int], Callable[..., int],
                     Callable[..., int], Path]:
    import sys
    import sysconfig

    from ..cachedir import cached_product, compiler_command

    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(repr((compiler_command(), sysconfig.get_config_var("CFLAGS"),
                   sys.platform)).encode())
    digest = h.hexdigest()[:20]
    path = cached_product("lz4batch", digest, LIBRARY)
    if not path.exists():   # the builder (and what it imports) only when there is work
        path = _build(digest)
    lib = ctypes.CDLL(str(path))
    enc, dec, zero = lib.zdtm_encode_blocks, lib.zdtm_decode_blocks, lib.zdtm_all_zero
    vp, lg = ctypes.c_void_p, ctypes.c_long
    enc.argtypes = [vp, lg, vp, lg, lg, ctypes.c_int, vp, vp, vp, vp, vp, vp]
    enc.restype = lg
    dec.argtypes = [vp, lg, vp, lg, lg, lg, vp, ctypes.c_int, ctypes.c_int, vp, vp, lg]
    dec.restype = lg
    zero.argtypes, zero.restype = [vp, lg], ctypes.c_int
    packed = lib.zdtm_encode_packed
    packed.argtypes, packed.restype = enc.argtypes[:-1], lg
    return enc, dec, zero, packed, path


def _build(digest: str) -> Path:
    """Compile lz4batch.c into the build cache (once per digest across processes)."""
    from ..build import build_cached, compile_sources, new_compiler
    from ..errors import BuildError

    what = "zdtmpy LZ4 block encoder"

    def build(tmp: Path) -> Path:
        from distutils.errors import LinkError

        cc, cap = new_compiler(what)
        objs = compile_sources(cc, cap, [SOURCE], tmp / "obj", what, extra_postargs=["-O2"])
        out = tmp / LIBRARY
        try:
            cc.link_shared_object(objs, str(out))
        except LinkError:
            raise BuildError(f"{what}: linking {out.name} failed:\n{cap.output()}") from None
        return out

    return build_cached("lz4batch", digest, LIBRARY, build)


def all_zero(nat: Native, buf: bytearray, n: int) -> bool:
    """The first n bytes of buf are zero: one C scan, without the GIL."""
    assert nat.batch_all_zero is not None
    if n > len(buf):
        raise ValueError(f"all_zero: {n} bytes asked, the buffer holds {len(buf)}")
    pin, addr = address(buf)
    zero = n <= 0 or bool(nat.batch_all_zero(addr, n))
    del pin
    return zero


def encode(nat: Native, src: bytearray, n: int, out: bytearray, block_bytes: int,
           acceleration: int) -> EncodedParts:
    """encode_into through lz4batch.c: one C call for the whole of src[:n]."""
    assert nat.batch is not None and nat.batch_all_zero is not None
    nblocks = -(-n // block_bytes)
    src_c = ctypes.c_char.from_buffer(src)   # keeps the buffers pinned while in use
    # an all-zero chunk (common in memory images) costs one scan without the GIL, so the
    # workers scan in parallel, and none of the per-call set-up below
    if n and nat.batch_all_zero(ctypes.addressof(src_c), n):
        return [0] * nblocks, []
    sizes = array("I", bytes(4 * nblocks))
    runs = array("q", bytes(24 * nblocks))
    out_c = ctypes.c_char.from_buffer(out)
    reset, compress, bound = nat.fn_ptrs
    k = nat.batch(ctypes.addressof(src_c), n, ctypes.addressof(out_c), len(out), block_bytes,
                  acceleration, nat.state(), reset, compress, bound, sizes.buffer_info()[0],
                  runs.buffer_info()[0])
    del src_c, out_c
    if k < 0:
        raise ValueError(f"encode_into: output buffer of {len(out)} bytes is too small")
    smv, omv = memoryview(src), memoryview(out)
    parts: list[bytes | memoryview] = []
    add = parts.append
    for i in range(0, 3 * k, 3):
        off = runs[i + 1]
        add((omv if runs[i] else smv)[off:off + runs[i + 2]])
    return sizes.tolist(), parts


def encode_packed(nat: Native, src: bytearray, n: int, out: bytearray, block_bytes: int,
                  acceleration: int) -> tuple[array[int], int]:
    """encode_into with the whole payload in `out` (at least n bytes), raw blocks copied
    there too: (sizes as C uint32s, payload length), one C call and no Python work per
    block. The payload is out[:length]: the same bytes as encode's parts joined."""
    assert nat.batch_packed is not None
    if len(out) < n or len(src) < n:
        raise ValueError(f"encode_packed: {n} bytes asked, the buffers hold {len(src)} "
                         f"and {len(out)}")
    sizes = array("I", bytes(4 * -(-n // block_bytes)))
    if n == 0:
        return sizes, 0
    src_c = ctypes.c_char.from_buffer(src)   # keeps the buffers pinned while in use
    out_c = ctypes.c_char.from_buffer(out)
    reset, compress, bound = nat.fn_ptrs
    m = nat.batch_packed(ctypes.addressof(src_c), n, ctypes.addressof(out_c), len(out),
                         block_bytes, acceleration, nat.state(), reset, compress, bound,
                         sizes.buffer_info()[0])
    del src_c, out_c
    if m < 0:
        raise ValueError(f"encode_packed: output buffer of {len(out)} bytes is too small")
    return sizes, m


def decode(nat: Native, src: Buffer, stored_len: int, sizes: Sequence[int], block_bytes: int,
           total_bytes: int, out: bytearray, out_offset: int = 0,
           zero_fill: bool = False, fill: bool = True) -> list[Piece] | None:
    """Decode blocks with one C call, every block going to its own place in `out` from
    out_offset on. src: bytes, a bytearray or a writable memoryview (stored_len bytes).
    Zero blocks are zero-filled when zero_fill, else skipped. Raw blocks are copied to
    `out` when fill, else left in src (their pieces are views into src: no copy).
    Returns the pieces (ints for zero runs, memoryviews into `out` or src, adjacent data
    merged), or None when a block is bad. Pages of data blocks that are all zeros are zero
    runs too (`out` holds their zeros when fill): a writer leaves them as holes instead of
    writing them."""
    nblocks = len(sizes)
    end = min(total_bytes, nblocks * block_bytes)
    if end <= 0:
        return None   # nothing to decode: the Python loop handles odd calls
    copy_raw = fill or zero_fill
    got = _run_decoder(nat, "decode_into", src, stored_len, sizes, block_bytes, end, out,
                       out_offset, zero_fill, copy_raw, PAGE_SIZE)
    if got is None:
        return None
    k, runs = got
    omv = memoryview(out)
    smv = omv if copy_raw else memoryview(src)
    if smv.format != "B":
        smv = smv.cast("B")
    pieces: list[Piece] = []
    add = pieces.append
    prev = 0
    for i in range(0, 3 * k, 3):
        off, n, at = runs[i], runs[i + 1], runs[i + 2]
        if off > prev:
            add(off - prev)
        prev = off + n
        if at < 0:
            add(omv[out_offset + off:out_offset + prev])
        else:
            add(smv[at:at + n])
    if end > prev:
        add(end - prev)
    return pieces


def decode_whole(nat: Native, src: Buffer, stored_len: int, sizes: Sequence[int],
                 block_bytes: int, total_bytes: int, out: Buffer, out_offset: int = 0,
                 zero_fill: bool = True) -> bool:
    """All of out[out_offset:out_offset + total_bytes] from the blocks, one C call, nothing
    reported back (no pieces, no scan for zero pages): raw blocks copied, zero blocks
    zero-filled when zero_fill, else left alone (`out` holds zeros there already, e.g.
    fresh memory). out: a writable buffer. False when a block is bad (the caller decodes
    again to say which) or the blocks do not cover total_bytes."""
    nblocks = len(sizes)
    if total_bytes <= 0 or nblocks * block_bytes < total_bytes or \
            nblocks * block_bytes - total_bytes >= block_bytes:
        return False
    return _run_decoder(nat, "decode_whole", src, stored_len, sizes, block_bytes,
                        total_bytes, out, out_offset, zero_fill, True, 0) is not None


def _run_decoder(nat: Native, what: str, src: Buffer, stored_len: int, sizes: Sequence[int],
                 block_bytes: int, end: int, out: Buffer, out_offset: int, zero_fill: bool,
                 copy_raw: bool, unit: int) -> tuple[int, array[int]] | None:
    """The one call of lz4batch.c's decoder behind decode and decode_whole: the buffers
    checked against the sizes (ValueError: a caller's mistake, not bad data), the sizes as
    C uint32s, both buffers pinned for the call. (number of runs, the runs) or None when a
    block is bad or a size does not fit 32 bits (the caller decodes again to say why).
    unit: pages of data that are all zero become gaps between runs (0: whole blocks)."""
    assert nat.batch_decode is not None
    if out_offset + end > len(out) or stored_len > len(src):
        raise ValueError(f"{what}: buffers smaller than the sizes given")
    try:
        sz = sizes if type(sizes) is array and sizes.typecode == "I" else array("I", sizes)
    except OverflowError:
        return None
    nblocks = len(sz)
    # at most one run per block, and one per unit inside the blocks
    runs = array("q", bytes(24 * (nblocks + (-(-end // unit) if unit else 1))))
    src_pin, sa = address(src if stored_len else b"")
    out_pin, oa = address(out)
    k = nat.batch_decode(sa, stored_len, sz.buffer_info()[0], nblocks, block_bytes, end,
                         oa + out_offset, 1 if zero_fill else 0, 1 if copy_raw else 0,
                         nat.decompress_ptr, runs.buffer_info()[0], unit)
    del src_pin, out_pin
    return (k, runs) if k >= 0 else None


def merge_pieces(pieces: Sequence[Piece]) -> bytes:
    """The bytes that pieces stand for (to compare two decoders, which may split zero runs
    differently: the batch decoder also reports zero pages inside data blocks)."""
    return b"".join(zeros(p) if isinstance(p, int) else bytes(p) for p in pieces)


def self_test(nat: Native) -> bool:
    """The batch coder against the python-lz4 reference on mixed chunks, also on damaged
    input (both must refuse the same blocks)."""
    ref = BlockCodec(PythonLZ4())
    rng = random.Random(11)
    # small: every process that codes pays for this once (about 10 ms)
    text = b"".join(b"row %d: some repetitive words of text\n" % i for i in range(400))
    pages = [text[:PAGE_SIZE], rng.randbytes(PAGE_SIZE), bytes(PAGE_SIZE),
             rng.randbytes(PAGE_SIZE // 2) + bytes(PAGE_SIZE // 2), text[5000:5000 + PAGE_SIZE]]
    data = b"".join(pages[i % 5] if i % 7 else pages[(i * 3) % 5] for i in range(70))
    data += text[:1000]   # a short last block
    for block in (PAGE_SIZE, 64 << 10):   # the C loop does not depend on the size
        for acc in (1, 5):
            want = ref.encode_parts(data, block, acc)
            src = bytearray(data)
            out = bytearray(len(data) + nat.bound(block) + 64)
            sizes, parts = encode(nat, src, len(data), out, block, acc)
            if sizes != want[0] or b"".join(parts) != b"".join(want[1]):
                return False
            psizes, m = encode_packed(nat, src, len(data), out, block, acc)
            if psizes.tolist() != want[0] or out[:m] != b"".join(want[1]):
                return False
            if acc == 1 and not _decode_matches(nat, ref, b"".join(want[1]), sizes, block,
                                                len(data)):
                return False
    return True


def _decode_matches(nat: Native, ref: BlockCodec, stored: bytes, sizes: list[int],
                    block: int, total: int) -> bool:
    lz4_at = [i for i, z in enumerate(sizes) if 0 < z < min(block, total - i * block)]
    variants = [stored]
    for i in lz4_at[:1] + lz4_at[-1:]:
        at = sum(sizes[:i])
        for fill in (b"\xff", b"\x00", b"\x1f"):
            variants.append(stored[:at] + fill * sizes[i] + stored[at + sizes[i]:])
    variants.append(stored[:-1])   # short
    for v in variants:
        want_pieces: bytes | None
        try:
            want_pieces = merge_pieces(ref.decode_parts(v, sizes, block, total))
        except ImageError:
            want_pieces = None
        for copy in (True, False) if v is stored else (True,):
            back = bytearray(total + 1)
            got = decode(nat, bytearray(v), len(v), sizes, block, total, back, fill=copy)
            if want_pieces is None:
                if got is not None:
                    return False
            elif got is None or merge_pieces(got) != want_pieces:
                return False
    return True
