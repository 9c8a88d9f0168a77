"""PagemapWriter's entries whose payload comes from an existing layer (an EntrySource):
decoded by the workers straight to their place in the pages file, or read and encoded."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..codec import Compression
from ..codec.algorithm import Buffer, Piece
from ..codec.blocks import BlockCodec, zeros
from ..errors import ImageError
from ..images.messages import Message
from ..images.pagemap import PAGE_SIZE, PE_PAYLOAD_ALIGNED, PE_PRESENT
from .pagesout import WriteBehind, writer_pool
from .pipeline import chunk_size, ordered_map, pwrite_all
from .progress import Progress
from .source import EntrySource, Task

# an encoded chunk: stored block sizes, the parts to write, what to call once written
EncodedChunk = tuple[list[int], Sequence[Buffer], "Callable[[], None] | None"]
# a copy task and what runs it: (end of the data written or 0, decoded bytes, progress)
CopyJob = tuple[Callable[[Task], "tuple[int, int, Progress | None]"], Task]
# an entry for copy_sources: vaddr, nr_pages, flags, its pages (None: not present), template
SourcedEntry = tuple[int, int, int, "EntrySource | None", "Message | None"]


class SourceEntries:
    """Mixed into PagemapWriter (whose state and _finish/_store_blocks it uses)."""

    if TYPE_CHECKING:  # PagemapWriter's, used here
        spec: Compression
        codec: BlockCodec
        _fd: int
        _tmp_pages: Path
        _pos: int
        _end: int
        _behind: WriteBehind

        dir: Path
        pagemap_name: str

        def _finish(self, msg: Message, flags: int, template: Message | None) -> None: ...
        def _sync(self) -> None: ...
        def _where(self) -> str: ...
        def _begin(self, vaddr: int, nr_pages: int, flags: int,
                   template: Message | None) -> Message: ...
        def begin(self, vaddr: int, nr_pages: int, flags: int,
                  template: Message | None = None) -> None: ...
        def feed_read(self, n: int, read: Callable[[], bytearray],
                      release: Callable[[bytearray], None] | None = None,
                      same_at: int | None = None) -> None: ...
        def _store_blocks(self, msg: Message, flags: int, nr_pages: int,
                          encoded: Iterable[EncodedChunk], template: Message | None) -> None: ...

    def _copy_source(self, msg: Message, flags: int, src: EntrySource,
                     template: Message | None) -> None:
        """Spec "off": the decoded payload of an EntrySource (see _copy_work)."""
        base = self._pos
        self._pos += len(src)
        self._run_copies(self._copy_jobs(src, base))
        return self._finish(msg, flags, template)

    def copy_sources(self, entries: Sequence[SourcedEntry]) -> None:
        """Spec "off" (decompress): add() of consecutive entries, (vaddr, nr_pages, flags,
        EntrySource of the pages or None without PE_PRESENT, template), all at once: the
        workers decode across entry boundaries instead of draining at each entry's end
        (each entry's place in the plain pages file is known up front)."""
        self._sync()
        if self.spec.enabled:
            raise ImageError(f"{self.dir / self.pagemap_name}: copy_sources writes plain "
                             "pages only")
        jobs: list[Iterator[CopyJob]] = []
        for vaddr, nr_pages, flags, src, template in entries:
            where = self._where()
            msg = self._begin(vaddr, nr_pages, flags, template)
            flags &= ~PE_PAYLOAD_ALIGNED
            if flags & PE_PRESENT:
                if src is None or len(src) != nr_pages * PAGE_SIZE:
                    raise ImageError(f"{where}: no pages given for a PE_PRESENT entry")
                jobs.append(self._copy_jobs(src, self._pos))
                self._pos += len(src)
            elif src is not None:
                raise ImageError(f"{where}: payload given for an entry without PE_PRESENT")
            self._finish(msg, flags, template)   # plain: the entry does not depend on them
        self._run_copies(itertools.chain.from_iterable(jobs))

    def _copy_jobs(self, src: EntrySource, base: int) -> Iterator[CopyJob]:
        """The tasks of src, its payload going to `base` on in the pages file. The decoded
        size of every task is known in advance, so each worker reads, decodes and writes
        (pwritev at its own offset, zero runs left as holes) one task: no ordering, no copy
        through the caller."""
        e = src.e
        sizes = e.sizes or []   # stored block sizes (a compressed source has them)
        block_bytes = e.block_pages * PAGE_SIZE if src.compressed else PAGE_SIZE
        chunk = chunk_size(block_bytes)
        pool = writer_pool(chunk)
        fd, what = self._fd, str(self._tmp_pages)

        def work(task: Task) -> tuple[int, int, Progress | None]:
            start, n, _, slen, b0, b1 = task
            buf, stored = src.read(task, pool)
            out = None
            try:
                pieces: list[Piece]
                if not src.compressed:
                    pieces = [n] if zeros(n).startswith(stored) else [stored]
                else:
                    out = pool.get()
                    if len(out) < n:
                        out = bytearray(n)
                    try:
                        pieces = self.codec.decode_into(buf, slen, sizes[b0:b1],
                                                        block_bytes, n, out, b0)
                    except ImageError as exc:
                        raise ImageError(f"{src.pm.path}: entry {e.index} {exc}") from None
                pos, end, run = base + start, 0, list[Buffer]()
                for p in pieces:  # write runs of data, skip zero runs (holes)
                    if isinstance(p, int):
                        if run:
                            pos += pwrite_all(fd, run, pos, what)
                            end, run = pos, []
                        pos += p
                    else:
                        run.append(p)
                if run:
                    pos += pwrite_all(fd, run, pos, what)
                    end = pos
                del pieces, run, stored   # views into buf: gone before it goes back
            finally:
                pool.put(buf)
                if out is not None:
                    pool.put(out)
            return end, n, src.progress

        return ((work, task) for task in src.tasks(chunk))

    def _run_copies(self, jobs: Iterable[CopyJob]) -> None:
        """Run copy jobs on the workers; here, only the bookkeeping of what they wrote."""
        for end, n, progress in ordered_map(lambda job: job[0](job[1]), jobs):
            if end:
                self._end = max(self._end, end)
            try:
                self._behind.wrote(self._end)
            except OSError as exc:   # a background flush failed
                raise ImageError(f"{self._tmp_pages}: write failed: {exc.strerror}") \
                    from None
            if progress:
                progress.update(n)

    def _encode_source(self, msg: Message, flags: int, nr_pages: int, src: EntrySource,
                       template: Message | None) -> None:
        """A compressed spec over an uncompressed EntrySource: workers read and encode."""
        block_bytes = self.spec.block_pages * PAGE_SIZE
        acc = self.spec.acceleration
        chunk = chunk_size(block_bytes)
        pool = writer_pool(chunk)
        outpool = writer_pool(chunk + block_bytes + (block_bytes >> 7) + 64)  # + LZ4 bound slack
        progress = src.progress

        def work(task: Task) -> EncodedChunk:
            buf, stored = src.read(task, pool)
            out = outpool.get()
            sizes, parts = self.codec.encode_into(buf, len(stored), out, block_bytes, acc)

            def done() -> None:
                pool.put(buf)
                outpool.put(out)
                if progress:
                    progress.update(task[1])
            return sizes, parts, done

        return self._store_blocks(msg, flags, nr_pages, ordered_map(work, src.tasks(chunk)),
                                  template)

    def begin_source(self, vaddr: int, nr_pages: int, flags: int, src: EntrySource,
                     template: Message | None = None) -> None:
        """A present entry whose pages come uncompressed from `src`, under a compressing
        spec, pipelined across entries (begin() + feed_read()): each chunk is read into a
        pooled buffer and encoded by a worker while the caller goes on with the next
        entry, so that small entries keep every core busy too and no entry waits for the
        one before to drain. The entries reach the files in order, by close() at the latest.
        """
        if src.compressed or not self.spec.enabled or len(src) != nr_pages * PAGE_SIZE:
            raise ImageError(f"{src.pm.path}: entry {src.e.index}: begin_source takes "
                             "uncompressed pages of the entry's size under a compressing spec")
        self.begin(vaddr, nr_pages, flags, template)
        chunk = chunk_size(self.spec.block_pages * PAGE_SIZE)
        pool = writer_pool(chunk)
        progress = src.progress
        for task in src.tasks(chunk):
            def read(task: Task = task) -> bytearray:   # by the worker that encodes it
                return src.read(task, pool)[0]

            def release(done: bytearray, n: int = task[1]) -> None:
                pool.put(done)
                if progress:
                    progress.update(n)
            self.feed_read(task[1], read, release, same_at=task[2])
