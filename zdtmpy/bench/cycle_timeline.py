"""The pytest plugin `bench cycle` loads into the runs it times (-p zdtmpy.bench.cycle_timeline).

Each process that runs items appends one line per item, "PID START END" (epoch seconds), to the
file named by $ZDTMPY_BENCH_TIMELINE: the bench then tells a run's start-up (until the first
item starts), its shutdown (after the last item ends) and the workers' tail (one worker done,
another still running) apart. Without the variable it does nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import Any

import pytest

ENV = "ZDTMPY_BENCH_TIMELINE"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, Any, Any]:
    path = os.environ.get(ENV)
    start = time.time()
    try:
        return (yield)
    finally:
        if path:
            line = f"{os.getpid()} {start:.6f} {time.time():.6f}\n".encode()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)  # one short O_APPEND write: lines of workers never mix
            finally:
                os.close(fd)
