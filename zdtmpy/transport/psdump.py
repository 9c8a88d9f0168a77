"""A dump session of the page server: pagemaps and pages received from `criu dump
--page-server`, written through PagemapWriter (compressed as the spec asks) into a private
staging directory and installed into the images directory only after a clean CLOSE.

Payload is received straight into pooled buffers; the receiving thread does nothing else:
every writer call runs in order in a writer thread (pswriter), which feeds the chunks to the
coding pool and writes the finished ones while the next bytes arrive. Entries are pipelined
(the writer writes them in order), so the workers do not idle at the end of every entry.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from ..codec import Compression
from ..compress.install import fsync_dir
from ..compress.pipeline import BufferPool, chunk_size, pool, shared_pool, workers
from ..compress.writer import PagemapWriter
from ..compress.writerfeed import output_pool, window
from ..errors import ImageError, PageServerError, ZdtmError
from ..images import messages
from ..images.framing import INVENTORY_MAGIC, read_image, write_image
from ..images.imageset import INVENTORY, PARENT_LINK
from ..images.messages import Message
from ..images.pagemap import PAGE_SIZE, PE_PRESENT
from .psconn import Conn, Described
from .pswire import (
    ADD,
    ADD_F,
    ADD_F_COMPRESSED,
    CLOSE,
    FORCE_CLOSE,
    GET,
    HOLE,
    MAX_COMPRESSED_PAGES,
    MAX_PAGEMAPS,
    MAX_PAYLOAD_PAGES,
    OPEN,
    OPEN2,
    PAGES_ID_BASE,
    PARENT,
    Header,
    HeaderLayout,
    check_no_flags,
    check_page_flags,
    check_range,
    entry_flags,
    pagemap_for,
)
from .pswriter import WriterThread

# writer calls that may wait for the writer thread (each holds at most one receive buffer)
QUEUED_CALLS = 8


def _buffers(size: int) -> BufferPool:
    return shared_pool("page-server receive", size, keep=16)  # reused across sessions


def _payload_what(h: Header, at: int, total: int) -> str:
    return f"payload of {h} ({at} of {total} bytes in)"


def warm_up(spec: Compression) -> None:
    """Load and touch what a dump session needs before criu connects, as criu's dump (its
    task frozen) would otherwise wait for it at its first pages: the pagemap message class,
    the coding threads, the codec's native helper (and its self-test), the receive and
    output buffers (their memory faulted in once)."""
    block_bytes = spec.block_pages * PAGE_SIZE
    messages.PagemapEntry()
    in_flight = QUEUED_CALLS + window()
    _buffers(chunk_size(block_bytes)).prefill(in_flight)
    if spec.enabled:
        from ..codec.lz4native import helper

        helper()
        if workers() > 1:
            pool()
        output_pool(block_bytes).prefill(window())


class _Closer:
    """Closes finished writers (fsync, rename) in a background thread, in order, so that
    opening the next pagemap does not hold up receiving; join() raises the first failure."""

    def __init__(self) -> None:
        self._ex: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        # (pagemap name, pages name), in the order the writers finished
        self.closed: list[tuple[str, str]] = []

    def close(self, writer: PagemapWriter) -> None:
        if self._ex is None:
            self._ex = ThreadPoolExecutor(1, thread_name_prefix="page-server-close")
        self._futures.append(self._ex.submit(writer.close))
        self.closed.append((writer.pagemap_name, writer.pages_name))

    def join(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True)
            self._ex = None
        futures, self._futures = self._futures, []
        for f in futures:
            exc = f.exception()
            if exc is not None:
                raise exc


class DumpSession:
    """One dump session: pagemaps written into a staging directory, installed on CLOSE."""

    def __init__(self, conn: Conn, layout: HeaderLayout, images_dir: str | os.PathLike[str],
                 spec: Compression, header_template: Message | None,
                 log: Callable[[str], None]) -> None:
        self.conn = conn
        self.layout = layout
        self.dir = Path(images_dir)
        self.spec = spec
        self.log = log
        self._template = header_template
        self._templates: dict[int, Message] = {}
        self.stage = Path(tempfile.mkdtemp(prefix=".zdtmpy-ps-", dir=self.dir))
        # used by the writer thread only (until wait() has returned)
        self.writer: PagemapWriter | None = None
        self.dst_id: int | None = None
        self._prev_end: int | None = None   # end of the last entry: entries come sorted
        self.opened: set[int] = set()
        self.next_pages_id = PAGES_ID_BASE + 1
        self.written: list[tuple[str, str]] = []   # (pagemap, pages) installed by install()
        self.entries = 0
        self.payload = 0
        self._closer = _Closer()
        self._step = chunk_size(spec.block_pages * PAGE_SIZE)   # what the writer works on
        self._bufs = _buffers(self._step)
        self._write = WriterThread(QUEUED_CALLS, max(conn.timeout, 60.0), self._wake_receiver)

    def _wake_receiver(self) -> None:
        """The writer thread failed: end the receiving thread's wait for the peer (its
        error then comes from failure())."""
        try:
            self.conn.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def failure(self) -> BaseException | None:
        """The first failure of the writer thread: the cause of a later receive error."""
        return self._write.error

    # lifecycle (see PageServer._session)
    @property
    def payload_bytes(self) -> int:
        return self.payload

    def closing(self) -> None:
        """Before CLOSE is answered: every payload byte is in the files (not yet synced), as
        criu's server answers once all data arrived."""
        self._write.call(self._drain)
        self._write.wait()
        self._write.stop()

    def _drain(self) -> None:
        if self.writer is not None:
            self.writer.drain()

    def closed(self) -> None:
        """After CLOSE: close (fsync, rename) every pagemap into the staging directory."""
        if self.writer is not None:
            self._closer.close(self.writer)
            self.writer = None
        self._closer.join()
        self.written = list(self._closer.closed)

    def commit(self) -> list[tuple[str, str]]:
        self.install()
        return self.written

    def release(self, ok: bool) -> None:
        self._write.stop()
        if not ok:
            self.abort()

    def install(self) -> None:
        """Move the staged files into the images directory (pages first: a pagemap never
        appears before its pages file)."""
        names = sorted(os.listdir(self.stage), key=lambda n: not n.startswith("pages-"))
        for name in names:
            os.replace(self.stage / name, self.dir / name)
        fsync_dir(self.dir)
        os.rmdir(self.stage)

    def abort(self) -> None:
        try:
            self._write.stop()   # the writer is this thread's from here on
            if self.writer is not None:
                writer, self.writer = self.writer, None
                writer.abort()
            try:
                self._closer.join()
            except (ZdtmError, OSError):
                pass   # discarded with the rest
        finally:  # whatever the abort raised (a full disk), the staging dir goes
            shutil.rmtree(self.stage, ignore_errors=True)

    # commands
    def handle(self, h: Header) -> bool:
        """Process one command; returns True when the session is over."""
        if h.command in (OPEN, OPEN2):
            check_no_flags(h)
            self._open(h)
            if h.command == OPEN2:
                self.conn.send(bytes([self._has_parent(h.dst_id)]), "OPEN2 reply")
        elif h.command == PARENT:
            check_no_flags(h)
            self.conn.send(struct.pack("=i", self._has_parent(h.dst_id)), "PARENT reply")
        elif h.command in (ADD, HOLE, ADD_F):
            if h.command != ADD_F:
                check_no_flags(h)
            self._add(h, entry_flags(h))
        elif h.command == ADD_F_COMPRESSED:
            self._add_compressed(h)
        elif h.command in (CLOSE, FORCE_CLOSE):
            check_no_flags(h)
            return True
        elif h.command == GET:
            raise PageServerError(f"{h}: this server receives a dump; GET is for a server "
                                  "started to serve lazy pages")
        else:
            raise PageServerError(f"unknown command {h.command:#x} (header {h})")
        return False

    def _open(self, h: Header) -> None:
        name = pagemap_for(h.dst_id)
        if h.dst_id in self.opened:
            raise PageServerError(f"{h}: {name} was already opened in this session")
        if len(self.opened) >= MAX_PAGEMAPS:
            raise PageServerError(f"{h}: more than {MAX_PAGEMAPS} pagemaps in one session")
        pages_id = self.next_pages_id
        self.next_pages_id += 1
        self._write.call(self._open_writer, name, pages_id)
        self.dst_id = h.dst_id
        self._prev_end = None
        self.opened.add(h.dst_id)
        self.log(f"open {name} -> pages-{pages_id}.img")

    def _open_writer(self, name: str, pages_id: int) -> None:
        if self.writer is not None:
            self.writer.drain()
            self._closer.close(self.writer)
            self.writer = None
        self.writer = PagemapWriter(self.stage, name, pages_id, self.spec)

    def _has_parent(self, dst_id: int) -> int:
        name = pagemap_for(dst_id)
        return int(os.path.exists(self.dir / PARENT_LINK / name))

    def _check_entry(self, h: Header, flags: int) -> None:
        """Raise unless `h` is a valid next entry for the open pagemap (the writer checks
        again, later: these checks name the command while it is the current one)."""
        if h.dst_id != self.dst_id:
            raise PageServerError(f"{h}: dst_id {h.dst_id:#x} is not the open pagemap "
                                  f"(open: {self.dst_id:#x})" if self.dst_id is not None else
                                  f"{h}: dst_id {h.dst_id:#x} was not opened (OPEN2 first)")
        check_page_flags(h, flags)
        check_range(h)
        if self._prev_end is not None and h.vaddr < self._prev_end:
            raise PageServerError(f"{h}: vaddr overlaps or precedes the previous entry "
                                  f"(ends at {self._prev_end:#x})")
        self._prev_end = h.vaddr + h.nr_pages * PAGE_SIZE

    def _template_for(self, flags: int) -> Message | None:
        """The entry template for `flags` (one per flags value: the writer only reads it)."""
        if self._template is None:
            return None
        t = self._templates.get(flags)
        if t is None:
            t = self._templates[flags] = messages.PagemapEntry()
            t.CopyFrom(self._template)
            t.flags = flags  # criu always writes the flags field
        return t

    def _add(self, h: Header, flags: int) -> None:
        if flags & PE_PRESENT and h.nr_pages > MAX_PAYLOAD_PAGES:
            raise PageServerError(f"{h}: {h.nr_pages} pages in one entry is over this "
                                  f"server's limit of {MAX_PAYLOAD_PAGES}")
        self._check_entry(h, flags)
        call = self._write.call
        call(self._begin, h.vaddr, h.nr_pages, flags)
        self.entries += 1
        if not flags & PE_PRESENT:
            return
        total = h.nr_pages * PAGE_SIZE
        step, bufs, feed = self._step, self._bufs, self._feed
        recv_into = self.conn.recv_into
        done = 0
        while done < total:
            n = min(step, total - done)
            buf = bufs.get()
            recv_into(buf, n, Described(partial(_payload_what, h, done, total)))
            call(feed, buf, n)   # compressed by the workers, written in order
            done += n
        self.payload += total

    # run by the writer thread
    def _begin(self, vaddr: int, nr_pages: int, flags: int) -> None:
        assert self.writer is not None   # _open_writer ran before: OPEN2 came first
        self.writer.begin(vaddr, nr_pages, flags, self._template_for(flags))

    def _feed(self, buf: bytearray, n: int) -> None:
        assert self.writer is not None
        self.writer.feed(buf, n, self._bufs.put)

    def _add_compressed(self, h: Header) -> None:
        flags = h.flags
        self._check_entry(h, flags)
        if not flags & PE_PRESENT:
            raise PageServerError(f"{h}: ADD_F_COMPRESSED without PE_PRESENT")
        if h.nr_pages > MAX_COMPRESSED_PAGES:
            raise PageServerError(f"{h}: {h.nr_pages} compressed pages in one entry is over "
                                  f"this server's limit of {MAX_COMPRESSED_PAGES}")
        sizes: list[int] = []
        blob = bytearray()
        for i in range(h.nr_pages):
            (size,) = struct.unpack("=I", self.conn.recv_exact(4, f"{h}: size of page {i}"))
            if size > PAGE_SIZE:
                raise PageServerError(f"{h}: page {i}: block size {size} is over a page "
                                      f"({PAGE_SIZE})")
            sizes.append(size)
            if size:
                blob += self.conn.recv_exact(size, f"{h}: block of page {i}")
        # add_compressed checks every block (and writes after the pipelined entries); here,
        # as the writer thread is idle, so that a bad block is told while it is current
        self._write.wait()
        assert self.writer is not None
        self.writer.add_compressed(h.vaddr, h.nr_pages, flags, sizes, blob)
        self.entries += 1
        self.payload += len(blob)


# -- after the dump ------------------------------------------------------------------------

def stamp_inventory(images_dir: str | os.PathLike[str], spec: Compression) -> bool:
    """Mark a set written by a non-compressing criu plus this server as compressed: img_version
    3, compress mode (field 15) and region size (field 16). Atomic (temp file + rename).
    Returns False when nothing needed changing (spec off, or already stamped the same way)."""
    if not spec.enabled:
        return False
    path = Path(images_dir) / INVENTORY
    raw = read_image(path, INVENTORY_MAGIC)
    if len(raw.entries) != 1:
        raise ImageError(f"{path}: expected 1 inventory entry, found {len(raw.entries)}")
    inv = messages.decode(messages.InventoryEntry, raw.entries[0], str(path))
    new = messages.InventoryEntry()
    new.CopyFrom(inv)  # keep every field we do not name
    if new.img_version not in (2, 3):
        raise ImageError(f"{path}: img_version {new.img_version}: expected 2 (criu's) or 3")
    spec.stamp(new)
    if new == inv:
        return False
    tmp = path.with_name(f".{INVENTORY}.stamp")
    write_image(tmp, INVENTORY_MAGIC, [new], fsync=True)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return True
