"""The one chart helper behind every `zdtmpy bench KIND --chart FILE.png`.

Every chart states the machine it was measured on, the load average before and after the
run (a shared machine skews wall times) and the reference its figures are compared with,
in a footer under the plot. matplotlib comes with the `bench` extra and is imported only
when a chart is asked for.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path

from . import BenchError


@dataclass
class Facts:
    """What every chart says about its run."""

    reference: str  # what the figures are compared with, e.g. "lz4 -1 CLI 1.9.4"
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = field(default_factory=os.getloadavg)
    machine: str = field(default_factory=lambda: (
        f"{socket.gethostname()}: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}"))

    def footer(self) -> str:
        b, a = self.load_before, self.load_after
        return (f"{self.machine}\nload average (1/5/15 min) before {b[0]:.2f}/{b[1]:.2f}/"
                f"{b[2]:.2f}, after {a[0]:.2f}/{a[1]:.2f}/{a[2]:.2f}\n"
                f"reference: {self.reference}")


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chart", metavar="FILE.png",
                        help="also draw the figures as a bar chart (needs the bench extra: "
                             "pip install 'zdtmpy[bench]')")


def require(path: str | None) -> None:
    """Refuse at once, not after a long run, when a chart was asked for and cannot be drawn."""
    if not path:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchError("--chart needs matplotlib: pip install 'zdtmpy[bench]'") from None
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise BenchError(f"--chart {path}: directory {parent} does not exist")


def bars(path: str | Path, *, title: str, groups: list[str], series: dict[str, list[float | None]],
         ylabel: str, facts: Facts, lines: dict[str, float] | None = None) -> Path:
    """Grouped bars: one group per label in `groups`, one bar per series in each (a None
    value leaves a gap); `lines` are labelled horizontal lines (reference, targets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.5, len(groups) * (0.5 + 0.35 * n)), 4.8))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        vals = [v if v is not None else 0.0 for v in values]
        drawn = ax.bar(xs, vals, width, label=label)
        ax.bar_label(drawn, labels=[f"{v:.2f}" if v is not None else "-" for v in values],
                     fontsize=7, padding=1)
    styles = iter(("-", "--", ":", "-."))
    for label, y in (lines or {}).items():
        ax.axhline(y, color="grey", lw=0.9, ls=next(styles, "--"), label=label)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, facts.footer(), fontsize=7, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
