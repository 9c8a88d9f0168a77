"""A one-line progress bar on stderr, only when stderr is a terminal and the job is large."""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_BYTES = 64 << 20


class Progress:
    def __init__(self, total: int, label: str, enabled: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = total >= MIN_BYTES and self.stream.isatty()
        self.enabled = enabled
        self.total, self.label, self.done = max(total, 1), label, 0
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2 and self.done < self.total:
            return
        self._last = now
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% "
                          f"{self.done >> 20}/{self.total >> 20} MiB")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
