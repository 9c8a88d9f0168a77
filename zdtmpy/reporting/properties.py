"""Per-item facts as junit properties, and the session's criu / kernel / host facts.

Every property is a flat (name, value) pair with a `zdtm_` prefix, so a junit XML consumer
(Jenkins, GitLab, GitHub) shows it as is, and the JSON report is built from the same pairs.
"""

from __future__ import annotations

import os
import platform
import socket
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CriuNotFound

if TYPE_CHECKING:
    from ..criu import Criu
    from ..cycle import Run
    from ..descriptor import Descriptor
    from ..matrix import Variant


class DescribedItem(Protocol):
    """A test item as the report sees it (zdtmpy's or the corpus's)."""

    @property
    def desc(self) -> Descriptor: ...
    @property
    def variant(self) -> Variant: ...

PREFIX = "zdtm_"
STAGE_PREFIX = "zdtm_stage_"  # zdtm_stage_<stage>_s = seconds spent in that stage
STAGE_SUFFIX = "_s"
# criu features that decide whole modes' skips, and whether criu reads compressed images
SKIP_FEATURES = ("uffd", "uffd-noncoop", "mem_dirty_track", "compress")


def kernel() -> str:
    return f"{platform.release()} {platform.machine()}"


def item_flavor(item: DescribedItem) -> str:
    """The flavor an item runs as: its own if it has one (corpus items), else the
    descriptor's first; built-in workloads run on the host ("h"), each in its own PID
    namespace."""
    own = getattr(item, "flavor", None)
    if isinstance(own, str) and own:
        return own
    flavors = getattr(item.desc, "flavor", ()) or ("h",)
    return flavors[0]


def static_properties(item: DescribedItem,
                      criu: Criu | CriuNotFound) -> list[tuple[str, Any]]:
    """What is known before the item runs (recorded for skipped items too)."""
    v = item.variant
    props = [
        ("zdtm_test", item.desc.name),
        ("zdtm_mode", v.mode.name),
        ("zdtm_compression", "+".join(c.name for c in v.layers) if v.layers
         else v.compression.name),
        ("zdtm_acceleration", v.acceleration),
        ("zdtm_flavor", item_flavor(item)),
        ("zdtm_kernel", kernel()),
    ]
    if not isinstance(criu, CriuNotFound):
        props += [("zdtm_criu_bin", str(criu.path)), ("zdtm_criu_version", criu.version_str)]
    else:
        props += [("zdtm_criu_bin", ""), ("zdtm_criu_version", "")]
    return props


def image_totals(image_sizes: dict[str, Any]) -> tuple[int, int] | None:
    """(bytes before, bytes after) compression over the image sets a run checked.

    `image_sizes` maps an image directory to (decoded bytes, stored bytes, compressed).
    The compressed sets are the ones that count; a run without any (compression off, or a
    criu baseline mode) reports its plain sets, where before == after.
    """
    sets = [s for s in image_sizes.values() if s is not None]
    chosen = [s for s in sets if s[2]] or sets
    if not chosen:
        return None
    return sum(s[0] for s in chosen), sum(s[1] for s in chosen)


def run_properties(run: Run, passed: bool) -> list[tuple[str, Any]]:
    """What the run measured: stage durations, image sizes, the failing stage."""
    props: list[tuple[str, Any]] = [
        (f"{STAGE_PREFIX}{name}{STAGE_SUFFIX}", round(seconds, 6))
        for name, seconds in run.timings.items()
    ]
    totals = image_totals(run.image_sizes)
    if totals is not None:
        before, after = totals
        props += [("zdtm_image_bytes_before", before), ("zdtm_image_bytes_after", after),
                  ("zdtm_image_ratio", round(before / after, 3) if after else None)]
    if not passed and run.failed_stage:
        props.append(("zdtm_failed_stage", run.failed_stage))
    return props


def criu_features(criu: Criu | CriuNotFound) -> dict[str, bool]:
    if isinstance(criu, CriuNotFound):
        return {}
    return criu.ask_features(SKIP_FEATURES)


def header_line(criu: Criu | CriuNotFound) -> str:
    feats = criu_features(criu)
    shown = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in feats.items())
    return f"zdtmpy: criu features deciding skips: {shown}"


def session_facts(criu: Criu | CriuNotFound) -> dict[str, Any]:
    """The criu / kernel / host facts of one pytest session, for the JSON report."""
    from .. import __version__

    facts: dict[str, Any] = {
        "kernel": kernel(),
        "host": socket.gethostname(),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "zdtmpy": __version__,
        "criu": None,
    }
    if not isinstance(criu, CriuNotFound):
        facts["criu"] = {"bin": str(criu.path), "version": criu.version_str,
                         "features": criu_features(criu)}
    else:
        facts["criu_missing"] = str(criu)
    return facts
