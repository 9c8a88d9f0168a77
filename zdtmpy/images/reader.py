"""PageReader: page contents of a dump across its parent chain, whatever each layer's format.

Each layer is read through its own pagemap metadata (uncompressed, per-page or region blocks).
Only the blocks a request needs are read (pread), located by binary search over the entries.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from typing import NamedTuple, NoReturn, Union, cast

from ..codec.coding import decode_block, decode_span_into
from ..errors import ImageError
from .imageset import ImageSet, load_chain
from .pagemap import (
    PAGE_SIZE,
    PE_LAZY,
    PE_PARENT,
    PE_PRESENT,
    Entry,
    Pagemap,
    PagemapKey,
    pagemap_name,
)
from .safeopen import open_regular

VMA_FILE_SHARED = 1 << 7
_BATCH_MIN_BLOCKS = 4   # from this many blocks a read goes through the batch decoder



class PageLocation(NamedTuple):
    layer_dir: str
    pagemap_file: str
    entry_index: int
    block_index: int


class Vma(NamedTuple):
    start: int
    end: int
    prot: int
    flags: int
    status: int
    shmid: int
    pgoff: int


# pages no entry covers: "error", "zero", or a function (start, stop) -> their bytes
Missing = Union[str, Callable[[int, int], bytes]]
# the PE_PARENT entry a read came down from: (layer index, pagemap, entry)
Child = Union[tuple[int, Pagemap, Entry], None]


def _key(pid: int | tuple[str, int]) -> PagemapKey:
    if isinstance(pid, tuple):
        if len(pid) != 2 or pid[0] != "shmem":
            raise ValueError(f"bad pagemap key {pid!r}: use a pid or ('shmem', id)")
        return ("shmem", int(pid[1]))
    return int(pid)


class PageReader:
    """Reads pages of one dump (a layer directory and its parents)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # (layer index, key) -> validated Pagemap or None
        self._maps: dict[tuple[int, PagemapKey], Pagemap | None] = {}
        self._fds: dict[tuple[int, PagemapKey | None], int] = {}  # -> fd of the pages file
        self._vmas: dict[int, list[Vma]] = {}   # pid -> sorted Vma list of the top layer
        self.layers: list[ImageSet] = load_chain(path)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> PageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass  # interpreter shutdown: fds may already be gone

    # -- public API --------------------------------------------------------------------

    def pids(self) -> list[int]:
        return self.layers[0].pids()

    def vmas(self, pid: int) -> list[Vma]:
        mm = self.layers[0].mm(pid)
        return [Vma(v.start, v.end, v.prot, v.flags, v.status, v.shmid, v.pgoff)
                for v in mm.vmas]

    def resolve(self, pid: int,
                vaddr: int) -> tuple[PagemapKey | None, int, int]:
        """Where the page at vaddr of process pid is stored: (key, address, pages) for the
        run of pages up to the end of its mapping — key is pid itself for private memory,
        ("shmem", id) with the offset in the object for shared memory — or (None, vaddr,
        pages) for a shared file mapping, whose pages live in the file, not the images."""
        from .shmem import shmem_key

        vma = self.vma_at(pid, vaddr)
        pages = (vma.end - vaddr) // PAGE_SIZE
        key = shmem_key(self.layers[0].path, vma)
        if key is not None:
            return key, vaddr - vma.start + vma.pgoff, pages
        if vma.status & VMA_FILE_SHARED:
            return None, vaddr, pages
        return _key(pid), vaddr, pages

    def vma_at(self, pid: int, vaddr: int) -> Vma:
        """The top layer's Vma of process pid that covers vaddr (ImageError if none)."""
        vmas = self._vmas.get(pid)
        if vmas is None:
            vmas = self._vmas[pid] = sorted(self.vmas(pid))
        i = bisect.bisect_right([v.start for v in vmas], vaddr) - 1
        if i < 0 or vaddr >= vmas[i].end:
            raise ImageError(f"{self.layers[0].path}/mm-{pid}.img: no mapping covers {vaddr:#x}")
        return vmas[i]

    def read(self, pid: int | tuple[str, int], vaddr: int, npages: int,
             missing: Missing = "error") -> bytes:
        """Bytes of npages pages from vaddr. missing="zero" reads pages that no pagemap entry
        of the top layer covers as zeros (CRIU does not dump never-touched / zero-pfn pages);
        a function (start, stop) -> bytes supplies them (filemap.private_file_source: what
        restore maps there); by default they are an ImageError."""
        out = bytearray(npages * PAGE_SIZE)
        self.read_into(pid, vaddr, out, missing)
        return bytes(out)

    def read_into(self, pid: int | tuple[str, int], vaddr: int, out: bytearray | memoryview,
                  missing: Missing = "error") -> None:
        """read() into a caller's writable buffer of whole pages (reused across calls: every
        byte of it is written, holes included), without the copies read() makes."""
        if vaddr % PAGE_SIZE:
            raise ImageError(f"read at {vaddr:#x}: address is not page aligned")
        if missing not in ("error", "zero") and not callable(missing):
            raise ValueError(f"missing must be 'error', 'zero' or a function (start, stop) "
                             f"-> bytes, not {missing!r}")
        view = memoryview(out).cast("B")
        if len(view) % PAGE_SIZE:
            raise ValueError(f"out has {len(view)} bytes, not whole pages")
        self._fill(0, _key(pid), vaddr, vaddr + len(view), view, vaddr, missing, None)

    def locate(self, pid: int | tuple[str, int], vaddr: int) -> PageLocation:
        """Where the bytes of the page at vaddr are stored (following PE_PARENT)."""
        key = _key(pid)
        vaddr -= vaddr % PAGE_SIZE
        li = 0
        child: Child = None
        while True:
            pm = self._pagemap(li, key)
            e = pm.find(vaddr) if pm is not None else None
            if pm is None or e is None:
                self._hole(li, key, vaddr, vaddr + PAGE_SIZE, child)
            if e.flags & PE_PRESENT:
                page = (vaddr - e.vaddr) // PAGE_SIZE
                block = page // e.block_pages if e.compressed else page
                return PageLocation(str(self.layers[li].path), pm.name, e.index, block)
            self._check_not_present(li, pm, e)
            child = (li, pm, e)
            li += 1

    # -- internals ---------------------------------------------------------------------

    def _pagemap(self, li: int, key: PagemapKey) -> Pagemap | None:
        """The layer's pagemap for key, validated once; None when the layer has none."""
        k = (li, key)
        if k in self._maps:
            return self._maps[k]
        layer = self.layers[li]
        if layer.journal_pending:
            raise ImageError(f"{layer.path}: an interrupted zdtmpy rewrite is pending; run "
                             "`zdtmpy compress` or `zdtmpy decompress` on it to finish it")
        pm = layer.pagemaps.get(key)
        if pm is not None:
            for index, text in pm.problems():
                raise ImageError(f"{pm.path}: entry {index}: {text}")
            why = pm.payload_problem()
            if why:
                raise ImageError(f"{pm.path}: {why}")
        self._maps[k] = pm
        return pm

    def _fd(self, li: int, pm: Pagemap) -> int:
        k = (li, pm.key)
        fd = self._fds.get(k)
        if fd is None:
            fd = open_regular(pm.pages_path)
            self._fds[k] = fd
        return fd

    def _hole(self, li: int, key: PagemapKey, start: int, stop: int,
              child: Child) -> NoReturn:
        layer = self.layers[li]
        name = pagemap_name(key)
        if child is not None:
            _, cpm, ce = child
            raise ImageError(
                f"{cpm.path}: entry {ce.index}: pages {start:#x}-{stop:#x} are PE_PARENT but "
                f"the parent layer {layer.path} has no {name} entry for them")
        raise ImageError(f"{layer.path}/{name}: no entry covers {start:#x}-{stop:#x} "
                         "(pages not dumped)")

    def _check_not_present(self, li: int, pm: Pagemap, e: Entry) -> None:
        """For an entry without PE_PRESENT: ImageError unless it points to a parent layer."""
        if not e.flags & PE_PARENT:
            what = "PE_LAZY (pages are not in the images)" if e.flags & PE_LAZY else \
                "neither PE_PRESENT nor PE_PARENT"
            raise ImageError(f"{pm.path}: entry {e.index} at {e.vaddr:#x} is {what}")
        if li + 1 >= len(self.layers):
            raise ImageError(f"{pm.path}: entry {e.index} at {e.vaddr:#x} is PE_PARENT but "
                             f"{self.layers[li].path} has no parent link")

    def _fill(self, li: int, key: PagemapKey, start: int, stop: int, out: memoryview,
              origin: int, missing: Missing, child: Child) -> None:
        pm = self._pagemap(li, key)
        pos = start
        while pos < stop:
            e = pm.find(pos) if pm is not None else None
            if pm is None or e is None:
                nxt = pm.next_start(pos) if pm is not None else None
                end = min(stop, nxt) if nxt is not None else stop
                if child is not None or missing == "error":
                    self._hole(li, key, pos, end, child)
                if callable(missing):  # what restore maps there (a private file's bytes)
                    out[pos - origin:end - origin] = missing(pos, end)
                else:
                    out[pos - origin:end - origin] = bytes(end - pos)
                pos = end
                continue
            end = min(stop, e.end)
            if e.flags & PE_PRESENT:
                self._copy(li, pm, e, pos, end, out, origin)
            else:
                self._check_not_present(li, pm, e)
                self._fill(li + 1, key, pos, end, out, origin, "error", (li, pm, e))
            pos = end

    def _copy(self, li: int, pm: Pagemap, e: Entry, a: int, b: int, out: memoryview,
              origin: int) -> None:
        p0 = (a - e.vaddr) // PAGE_SIZE
        p1 = (b - e.vaddr) // PAGE_SIZE
        fd = self._fd(li, pm)
        dst = a - origin
        assert e.offset is not None   # a present entry: layout() placed it
        if e.sizes is None:  # plain pages: read straight into `out`
            n = (p1 - p0) * PAGE_SIZE
            got = os.preadv(fd, [out[dst:dst + n]], e.offset + p0 * PAGE_SIZE)
            if got != n:
                raise ImageError(f"{pm.pages_path}: short read for entry {e.index} of "
                                 f"{pm.name} ({got} of {n} bytes)")
            return
        bp = e.block_pages
        b0, b1 = p0 // bp, (p1 - 1) // bp + 1
        offs = e.block_offsets
        n = offs[b1] - offs[b0]
        buf = os.pread(fd, n, e.offset + offs[b0]) if n else b""
        if len(buf) != n:
            raise ImageError(f"{pm.pages_path}: short read for entry {e.index} of "
                             f"{pm.name} ({len(buf)} of {n} bytes)")
        lo_want, hi_want = p0 * PAGE_SIZE, p1 * PAGE_SIZE
        base = dst - lo_want          # out position of the entry's byte 0
        if b1 - b0 >= _BATCH_MIN_BLOCKS:
            # many blocks: one call of the batch decoder (lz4batch.c), into `out` itself
            # when the blocks are exactly the pages asked for
            start = b0 * bp * PAGE_SIZE
            span = min(b1 * bp, e.nr_pages) * PAGE_SIZE - start
            sizes = e.sizes[b0:b1]
            if start == lo_want and start + span == hi_want:
                if 0 in sizes:  # the decoder skips zero blocks: `out` may be reused
                    out[dst:dst + span] = bytes(span)
                # (typed bytearray, the decoder takes any writable buffer)
                if decode_span_into(buf, sizes, bp * PAGE_SIZE, span, cast(bytearray, out),
                                    dst):
                    return
            else:
                tmp = bytearray(span)
                if decode_span_into(buf, sizes, bp * PAGE_SIZE, span, tmp):
                    out[dst:dst + hi_want - lo_want] = \
                        memoryview(tmp)[lo_want - start:hi_want - start]
                    return
        # decode block by block straight into `out`, copying only the pages asked for
        mv = memoryview(buf)
        pos = 0
        for i, size in enumerate(e.sizes[b0:b1], b0):
            stored = mv[pos:pos + size]
            pos += size
            nbytes = e.block_bytes(i)
            start = i * bp * PAGE_SIZE
            lo, hi = max(start, lo_want), min(start + nbytes, hi_want)
            if size == 0:  # a zero block
                out[base + lo:base + hi] = bytes(hi - lo)
                continue
            data: bytes | memoryview
            try:
                data = stored if size == nbytes else decode_block(stored, size, nbytes)
            except ImageError as exc:
                raise ImageError(f"{pm.path}: entry {e.index} block {i}: {exc}") from None
            out[base + lo:base + hi] = memoryview(data)[lo - start:hi - start]
