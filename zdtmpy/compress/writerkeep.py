"""PagemapWriter's kept pages: output that is byte for byte the source's pages file is not
written at all.

A layer of incompressible pages compresses to the very bytes it holds (every block stored
raw, entries in the plain layout), and a layer whose entries are only flagged
PE_PAYLOAD_ALIGNED without padding decompresses to them. Rewriting such a pages file costs
a full write (and the page cache to hold it) for nothing. With keep_identical(fd), the
writer holds back output while it equals the start of the source pages file `fd` at the
same offsets. When all of it does, close() leaves the source file in place (pages_kept:
only the pagemap is installed). At the first output that differs, the held-back bytes are
copied from the source in the kernel (copy_file_range) and writing goes on as usual.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ImageError
from ..images.messages import Message
from ..images.pagemap import PAGE_SIZE, PE_PAYLOAD_ALIGNED, PE_PRESENT

_COPY_STEP = 64 << 20   # bytes per copy_file_range call (each one releases the GIL)
_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class KeptPages:
    """Mixed into PagemapWriter (whose state, _begin and _finish it uses)."""

    if TYPE_CHECKING:  # PagemapWriter's, used here
        dir: Path
        _fd: int
        _tmp_pages: Path
        _pos: int
        _end: int

        def _begin(self, vaddr: int, nr_pages: int, flags: int,
                   template: Message | None) -> Message: ...
        def _finish(self, msg: Message, flags: int, template: Message | None) -> None: ...
        def _sync(self) -> None: ...
        def _where(self) -> str: ...

    def _init_kept(self) -> None:
        self._same_fd: int | None = None   # the source pages file our output still equals
        self._same_end = 0                 # output held back: the source's bytes [0, here)
        self.pages_kept = False            # close() left the source pages file in place

    def keep_identical(self, fd: int) -> None:
        """Hold back output while it equals the pages file open as fd (see the module).
        Before the first entry."""
        if self._pos:
            raise ImageError(f"{self._where()}: keep_identical after the first entry")
        self._same_fd = fd

    def _holding(self, n: int, same_at: int | None) -> bool:
        """The next n bytes of output are the source's bytes at same_at (None: unknown):
        hold them back when everything before was held back too."""
        if self._same_fd is None or same_at is None or same_at != self._pos \
                or self._same_end != self._pos:
            return False
        self._pos += n
        self._same_end = self._pos
        return True

    def add_kept(self, vaddr: int, nr_pages: int, flags: int, offset: int,
                 template: Message | None = None) -> None:
        """Spec "off": a present entry whose pages lie at `offset` of the source pages
        file, where the plain layout puts them too: the entry, with its pages held back."""
        self._sync()
        where = self._where()
        msg = self._begin(vaddr, nr_pages, flags, template)
        if not flags & PE_PRESENT or not self._holding(nr_pages * PAGE_SIZE, offset):
            raise ImageError(f"{where}: add_kept needs a present entry at the plain "
                             f"layout's offset (source offset {offset}, here {self._pos})")
        self._finish(msg, flags & ~PE_PAYLOAD_ALIGNED, template)

    def _release_held(self) -> None:
        """Output is about to differ from the source: copy what was held back, stop
        holding."""
        fd, n = self._same_fd, self._same_end
        self._same_fd = None
        if fd is None or not n:
            return
        done = 0
        while done < n:
            try:
                got = os.copy_file_range(fd, self._fd, min(_COPY_STEP, n - done), done, done)
            except OSError as exc:
                if done == 0 and exc.errno in _NO_COPY_RANGE:
                    got = self._copy_by_hand(fd, done, n)
                else:
                    raise ImageError(f"{self._tmp_pages}: copying the unchanged pages "
                                     f"failed: {exc.strerror}") from None
            if got <= 0:
                raise ImageError(f"{self._tmp_pages}: the source pages file ended after "
                                 f"{done} of {n} bytes")
            done += got
        self._end = max(self._end, n)

    def _copy_by_hand(self, fd: int, start: int, end: int) -> int:
        """copy_file_range is not available here: pread/pwrite in 1 MiB steps."""
        pos = start
        while pos < end:
            data = os.pread(fd, min(1 << 20, end - pos), pos)
            if not data:
                break
            try:
                os.pwrite(self._fd, data, pos)
            except OSError as exc:
                raise ImageError(f"{self._tmp_pages}: write failed: {exc.strerror}") from None
            pos += len(data)
        return pos - start

    def _close_kept(self) -> bool:
        """At close: True when every byte was held back and they are the whole source
        file (the caller then leaves it in place); else the held bytes are written."""
        fd = self._same_fd
        if fd is not None and self._same_end == self._pos == os.fstat(fd).st_size \
                and self._end == 0 and self._pos:
            self.pages_kept = True
            return True
        self._release_held()
        return False

    def _before_write(self) -> None:
        """Any write or hole that is not held back ends the holding."""
        if self._same_fd is not None:
            self._release_held()
