"""criu logs are read bounded: a runaway criu writes ~13 MB/s, the report must not follow."""

import tracemalloc

from zdtmpy.criu import LOG_HEAD_CAP, LOG_TAIL_CAP, log_excerpt, returncode_text, signal_name


def test_huge_log_is_read_bounded_and_keeps_errors_and_tail(tmp_path):
    log = tmp_path / "restore.log"
    with open(log, "w") as f:
        f.write("(00.1) Error (criu/x.c:1): first failure\n")
        line = "(00.2) pie: 1: spinning on a short pages file " + "x" * 60 + "\n"
        f.write(line * (64 * 1024 * 1024 // len(line)))  # 64 MiB of noise
        f.write("(99.9) Error (criu/y.c:2): last words\n")
    tracemalloc.start()
    text = log_excerpt(log)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "first failure" in text and "last words" in text
    assert "bytes in the middle of the log not read" in text
    assert peak < 4 * (LOG_HEAD_CAP + LOG_TAIL_CAP), peak


def test_one_endless_line_is_cut(tmp_path):
    log = tmp_path / "dump.log"
    log.write_text("Error: " + "y" * 100000 + "\n")
    text = log_excerpt(log)
    assert len(text) < 5000


def test_signals_are_named():
    assert signal_name(9) == "SIGKILL"
    assert signal_name(77) == "signal 77"
    assert returncode_text(-9) == "was killed by SIGKILL"
    assert returncode_text(1) == "exited with status 1"
