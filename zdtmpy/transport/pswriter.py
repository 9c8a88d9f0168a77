"""The writing side of a dump session, in its own thread.

The thread that reads the socket is the one part of the page server that cannot run in
parallel, and criu's dump waits on it (a full socket buffer stops criu). So it only
receives: every call on the pagemap writer (begin an entry, feed a chunk, which hands it to
the coding pool and writes the finished ones with pwritev, open and close files) is queued
here and run in order by one writer thread, while the next bytes arrive.

At most `limit` calls wait (each may hold a receive buffer): memory stays bounded. The first
failure stops the calls after it, is raised by the next call() or wait(), and is passed to
`on_error` at once so that the receiving thread does not wait for a peer that keeps quiet.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import PageServerError

Call = tuple[Callable[..., Any], tuple[Any, ...]]


class WriterThread:
    """Runs queued calls in order in one background thread (see the module docstring)."""

    def __init__(self, limit: int, timeout: float, on_error: Callable[[], None]) -> None:
        self.timeout = timeout   # how long call() and wait() wait for the writer thread
        self._on_error = on_error
        self._queue: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._slots = threading.Semaphore(limit)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="page-server-write",
                                        daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        """The first failure of a queued call (None: none so far)."""
        return self._error

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue fn(*args) after the calls queued before; raises an earlier call's failure."""
        if self._error is not None:
            raise self._error
        if not self._slots.acquire(timeout=self.timeout):
            raise PageServerError(f"writing the images fell behind: no progress for "
                                  f"{self.timeout:g}s")
        self._queue.put((fn, args))

    def wait(self) -> None:
        """Return once every call queued so far has run; raises the first failure."""
        done = threading.Event()
        self.call(done.set)
        deadline = time.monotonic() + self.timeout
        while not done.wait(0.2):
            if self._error is not None:
                raise self._error
            if time.monotonic() > deadline:
                raise PageServerError(f"writing the images did not finish within "
                                      f"{self.timeout:g}s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End the thread once the queued calls ran (or were skipped after a failure)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                if self._error is None:
                    fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the receiving thread
                self._error = exc
                try:
                    self._on_error()
                except Exception:  # noqa: BLE001, S110 - the first failure is the one to tell
                    pass
            finally:
                self._slots.release()
