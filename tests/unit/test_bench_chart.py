"""The one chart helper: every chart states machine, load and reference, and is a PNG."""

import os
import platform
from types import SimpleNamespace

import pytest

from zdtmpy.bench import BenchError, chart, figures
from zdtmpy.codec import Compression

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_footer_states_machine_load_and_reference():
    facts = chart.Facts("lz4 CLI 1.9.4", load_before=(1.5, 2.25, 3.0),
                        load_after=(4.0, 5.0, 6.0))
    text = facts.footer()
    assert platform.release() in text and f"{os.cpu_count()} CPUs" in text
    assert "before 1.50/2.25/3.00, after 4.00/5.00/6.00" in text
    assert "reference: lz4 CLI 1.9.4" in text


def test_bars_writes_a_png_with_gaps(tmp_path):
    out = chart.bars(tmp_path / "c.png", title="t", groups=["a", "b"],
                     series={"x": [1.0, None], "y": [0.5, 2.0]}, ylabel="ratio",
                     facts=chart.Facts("ref", (0.1, 0.2, 0.3)), lines={"ref = 1": 1.0})
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_stream_figure_from_measured_rows(tmp_path):
    rows = [{"dump": 1.0, "restore": 0.5, "bytes": 100}]
    streamed = [{"dump": 1.5, "restore": 1.0, "bytes": 40}]
    args = SimpleNamespace(compression=Compression("page"), size=64, repeat=1)
    criu = SimpleNamespace(version_str="4.1.1")
    figures.stream(str(tmp_path / "s.png"), args, criu, rows, streamed, (0.0, 0.0, 0.0))
    assert (tmp_path / "s.png").read_bytes().startswith(PNG_MAGIC)


def test_chart_into_a_missing_directory_is_refused_before_the_run(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        chart.require(str(tmp_path / "no" / "c.png"))
    chart.require(None)  # no chart asked for: nothing to check
