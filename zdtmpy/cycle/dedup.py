"""Dedup cycles over parent chains built without dirty tracking.

`dedup`: full dumps at successive steps, rebased by zdtmpy into a chain (each layer in its own
compression), then the parents lose every page the top replaced: by `criu dedup` when the
whole chain is plain, by `zdtmpy dedup` otherwise (criu's dedup punches holes at plain
offsets: it would cut into compressed payloads). The chain must verify, the top must read
back as its full dump and pass the oracle, the parents must have shrunk, and the top must
restore.

`auto-dedup`: criu's own `dump --track-mem --auto-dedup --prev-images-dir`: each dump
punches, in the layer below, the pages it writes itself. criu refuses a parent dumped without
--track-mem ("Pid-reuse detection failed: no parent inventory"), so this mode needs dirty
tracking like `pre` and `snaps`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..compress.dedup import allocated_bytes
from . import Run
from .chain import (
    _decompress_chain,
    _dumped_every_layer,
    _restore_top,
    _verify,
    dump_steps,
    rebase_layers,
)
from .transforms import link_copy

if TYPE_CHECKING:
    from ..workload import Manifest

AUTO_LAYERS = 3


def _sizes(layers: list[Path]) -> list[int]:
    return [allocated_bytes(layer) for layer in layers]


def _changed(manifests: list[Manifest]) -> bool:
    """Whether the workload says it changed pages between the dumps. A workload without a
    manifest (CRIU's own tests) promises nothing: its parents may rightly keep every page."""
    return any(m.regions != manifests[0].regions for m in manifests[1:])


def _report(r: Run, layers: list[Path], before: list[int], how: str,
            pages_dropped: int | None = None, changed: bool = True) -> None:
    """Attach (and keep in the test directory) the sizes; fail when nothing was dropped
    although the workload changed pages. zdtmpy dedup says how many stored pages it dropped;
    criu's holes show as fewer allocated bytes."""
    after = _sizes(layers)
    lines = [f"{how}; allocated pages bytes per layer, before -> after:"]
    lines += [f"  {layer.name}: {b} -> {a}" for layer, b, a in zip(layers, before, after)]
    saved = sum(before) - sum(after)
    lines.append(f"  saved: {saved} bytes")
    if pages_dropped is not None:
        lines.append(f"  stored pages dropped from parents: {pages_dropped}")
    r.path("dedup-sizes.txt").write_text("\n".join(lines) + "\n")  # kept with --zdtm-keep
    r.attach("dedup sizes", r.path("dedup-sizes.txt"))
    if changed and (pages_dropped if pages_dropped is not None else saved) <= 0:
        r.fail(f"{how} dropped nothing although the workload changed pages between dumps:\n"
               + "\n".join(lines))


def _check_top(r: Run, layers: list[Path], full_top: Path | None,
               manifest: Manifest) -> None:
    """The chain is sound and the top still reads back as its dump and its manifest."""
    from ..compress.chain import same_content, verify_chain

    with r.stage("verify"):
        problems = verify_chain(layers[-1])
        if problems:
            r.fail("zdtmpy verify of the deduplicated chain:\n  "
                   + "\n  ".join(map(str, problems)))
        diffs = same_content(full_top, layers[-1]) if full_top is not None else []
        if diffs:
            r.fail("the top layer no longer reads back as its full dump after dedup:\n  "
                   + "\n  ".join(diffs))
    r.check_images(layers[-1], manifest, layer_note=" (top layer, after dedup)")


def run_dedup(r: Run) -> None:
    from ..compress.dedup import dedup_chain

    kinds = r.variant.layers or (r.variant.compression,)
    norst = r.norst
    pid = r.start_workload()
    steps = dump_steps(r, pid, len(kinds))
    if steps is None:
        return
    layers, manifests, before_state = steps
    full_top = link_copy(layers[-1], r.path("img-full") / layers[-1].name)
    rebase_layers(r, layers, kinds)  # calls the after-dump hook for every layer
    _verify(r, layers, None, "rebased chain")

    before = _sizes(layers)
    if any(k.enabled for k in kinds):
        how = "zdtmpy dedup"
        with r.stage("dedup"):
            result = dedup_chain(layers[-1], in_place=True)
        r.attach("zdtmpy dedup", text=result.message)
        dropped: int | None = sum(x.pages_before - x.pages_after for x in result.layers)
    else:
        how = "criu dedup"
        with r.stage("dedup"):
            r.criu_run("dedup", ["-D", str(layers[-1])], "dedup.log", "dedup")
        dropped = None
    _report(r, layers, before, how, dropped, _changed(manifests))
    _check_top(r, layers, full_top, manifests[-1])
    _decompress_chain(r, layers, kinds)
    _check_top(r, layers, full_top, manifests[-1])
    _restore_top(r, layers, before_state, pid, norst)


def run_auto_dedup(r: Run) -> None:
    norst = r.norst
    pid = r.start_workload()
    sizes: list[int] = []

    def dump_one(i: int, layer: Path, last: bool) -> None:
        # criu checks pid reuse against the parent's dump time, which only a --track-mem
        # dump records: so auto-dedup needs dirty tracking (the mode's feature)
        extra = ["--track-mem"]
        if i:
            extra += ["--auto-dedup", "--prev-images-dir", f"../{i}"]
        r.dump(pid, layer, extra, log_name=f"dump-{i + 1}.log", stage=f"dump-{i + 1}",
               leave_running=norst or not last)
        sizes.append(allocated_bytes(layer))

    steps = dump_steps(r, pid, AUTO_LAYERS, dump_one)
    if steps is None:
        return
    layers, manifests, before_state = steps
    _dumped_every_layer(r, layers)
    _report(r, layers, sizes, "criu dump --auto-dedup", changed=_changed(manifests))
    _check_top(r, layers, None, manifests[-1])
    _restore_top(r, layers, before_state, pid, norst)
