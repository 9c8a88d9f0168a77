"""What a failing test's report shows beside the error: a log (bounded), a text."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Attachment:
    title: str
    path: Path | None = None
    text: str | None = None
    criu_log: bool = False  # show the error lines and the tail, not the whole log

    def read(self, limit: int = 20000) -> str:
        """The text, bounded: never more than `limit` bytes of a file are read."""
        if self.text is not None:
            return self.text
        if self.criu_log:
            from ..criu import log_excerpt

            assert self.path is not None
            return log_excerpt(self.path, tail=30) + f"\n(full log: {self.path})"
        if self.path is None:
            return ""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - limit))
                data = f.read(limit).decode(errors="replace")
        except OSError as exc:
            return f"({self.path}: {exc.strerror})"
        if size <= limit:
            return data
        return f"... ({size - limit} bytes cut)\n" + data
