"""A lazy-pages session of the page server: answers `criu lazy-pages --page-server`'s GET
requests from an image directory (any stored format, with parents) through PageReader.
Replies are never compressed."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ImageError, PageServerError
from ..images.pagemap import PAGE_SIZE, PE_PARENT, PE_PRESENT
from ..images.reader import PageReader
from .psconn import Conn
from .pswire import (
    ADD_F,
    ADDR_LIMIT,
    CLOSE,
    COMMAND_NAMES,
    FORCE_CLOSE,
    GET,
    MAX_GET_PAGES,
    Header,
    HeaderLayout,
)


class LazySession:
    """Answers GET {nr_pages, vaddr, dst_id = pid} with ADD_F|PE_PRESENT and raw pages."""

    def __init__(self, conn: Conn, layout: HeaderLayout, reader: PageReader,
                 log: Callable[[str], None]) -> None:
        self.conn = conn
        self.layout = layout
        self.reader = reader
        self.log = log
        self.served = 0

    def handle(self, h: Header) -> bool:
        """Process one command; returns True when the session is over."""
        if h.command == GET:
            self._get(h)
            return False
        if h.command in (CLOSE, FORCE_CLOSE):
            if h.flags:
                raise PageServerError(f"{h}: flags are only valid with ADD_F")
            return True
        if h.command in COMMAND_NAMES:
            raise PageServerError(f"{h}: this server serves lazy pages; it accepts only GET "
                                  "and CLOSE")
        raise PageServerError(f"unknown command {h.command:#x} (header {h})")

    # lifecycle (see PageServer._session)
    entries = 0

    @property
    def payload_bytes(self) -> int:
        return self.served * PAGE_SIZE

    def closing(self) -> None:
        pass

    def closed(self) -> None:
        pass

    def commit(self) -> list[tuple[str, str]]:
        return []

    def failure(self) -> BaseException | None:
        return None   # everything runs in the receiving thread

    def release(self, ok: bool) -> None:
        self.reader.close()

    def _get(self, h: Header) -> None:
        if h.flags:
            raise PageServerError(f"{h}: GET carries no flags")
        if h.nr_pages == 0 or h.vaddr % PAGE_SIZE or h.vaddr + h.nr_pages * PAGE_SIZE > ADDR_LIMIT:
            raise PageServerError(f"{h}: expected a positive page count at a page-aligned "
                                  "user address")
        pid = h.dst_id  # lazy-pages sends the bare pid here, not a type-encoded dst_id
        n = self._servable(pid, h.vaddr, min(h.nr_pages, MAX_GET_PAGES))
        if n == 0:
            # criu's own server drops the session here; an empty answer lets criu report it
            self.log(f"GET pid {pid} {h.vaddr:#x}: no dumped page there; answering 0 pages")
            self.conn.send(self.layout.pack(ADD_F, PE_PRESENT, 0, h.vaddr, h.dst_id),
                           "GET reply")
            return
        try:
            data = self.reader.read(pid, h.vaddr, n)
        except ImageError as exc:
            raise PageServerError(f"{h}: cannot read the pages: {exc}") from None
        self.conn.send(self.layout.pack(ADD_F, PE_PRESENT, n, h.vaddr, h.dst_id) + data,
                       "GET reply")
        self.served += n

    def _servable(self, pid: int, vaddr: int, want: int) -> int:
        """How many pages from vaddr (at most `want`) the top layer's entries cover without a
        gap and hold in the images (present, or in a parent)."""
        pm = self.reader.layers[0].pagemaps.get(pid)
        if pm is None:
            return 0
        pos, end = vaddr, vaddr + want * PAGE_SIZE
        while pos < end:
            e = pm.find(pos)
            if e is None or not e.flags & (PE_PRESENT | PE_PARENT):
                break
            pos = e.end
        return (min(pos, end) - vaddr) // PAGE_SIZE
