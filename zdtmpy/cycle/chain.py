"""Parent-chain cycles: rebased full dumps (no dirty tracking needed), criu pre-dump chains and
criu snapshot chains.

Each layer i is dumped at workload step i and keeps that step's manifest, so the oracle can
check every layer read through its chain. Layers are compressed one by one (bottom first, so
the version rule holds as each layer is written), verified as a chain, decompressed as a chain
and restored from the top.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..isolation import tree_pids
from . import Run
from .transforms import (
    COMPRESS_FEATURE,
    compare_dumps,
    link_copy,
    refuse_compressed,
)

TRACKED_LAYERS = 3  # pre / snaps: pre-dumps or snapshots, the last one the final dump


if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..codec import Compression
    from ..procstate import ProcState
    from ..workload import Manifest

DumpOne = Callable[[int, Path, bool], None]   # (index, layer dir, last?): runs criu dump


class Steps(NamedTuple):
    layers: list[Path]                   # img/1 .. img/n, bottom first
    manifests: list[Manifest]            # the workload's manifest before each dump
    before: dict[int, ProcState]         # visible state before the last dump


class _Crfail(Exception):
    """Internal: the descriptor expects criu to refuse the dump, and it did."""


def dump_steps(r: Run, pid: int, n: int, dump_one: DumpOne | None = None) -> Steps | None:
    """Dump n layers img/1..img/n, stepping the workload between them. Every dump but the
    last leaves the tree running (every one with norst); without norst the tree is gone
    when this returns.

    dump_one(i, layer_dir, last) runs criu for layer i. By default a full dump; then None
    when the descriptor expects criu to refuse and it did: the tree, still intact, is
    stopped."""
    def full_dump(i: int, layer: Path, last: bool) -> None:
        r.dump(pid, layer, log_name=f"dump-{i + 1}.log", stage=f"dump-{i + 1}",
               leave_running=r.norst or not last)
        if r.desc.has("crfail"):
            raise _Crfail

    layers: list[Path] = []
    manifests: list[Manifest] = []
    before: dict[int, ProcState] = {}
    host_tree: list[int] = []
    for i in range(n):
        last = i == n - 1
        if i:
            with r.stage("step"):
                r.started().next_step(pid, timeout=r.timeout())
        with r.stage("visible-state"):
            manifests.append(r.started().manifest())
            if manifests[-1].step != i:
                r.fail(f"manifest says step {manifests[-1].step} before dump {i + 1}, "
                       f"expected {i}")
            if last:
                before = r.capture_state(pid)
        if last:
            host_tree = tree_pids(pid)
        layer = r.path("img") / str(i + 1)
        try:
            (dump_one or full_dump)(i, layer, last)
        except _Crfail:
            r.stop_workload(pid)  # criu refused cleanly: the tree must still be intact
            return None
        layers.append(layer)
    if not r.norst:
        r.wait_tree_gone(host_tree)
    return Steps(layers, manifests, before)


def _verify(r: Run, layers: list[Path], fulls: list[Path] | None = None,
            what: str = "chain") -> None:
    """verify_chain on the top; with full copies, every layer must read back as its dump."""
    from ..compress.chain import same_content, verify_chain

    with r.stage("verify"):
        problems = verify_chain(layers[-1])
        if problems:
            r.fail(f"zdtmpy verify of the {what}:\n  " + "\n  ".join(map(str, problems)))
        for i, layer in enumerate(layers):
            diffs = same_content(fulls[i], layer) if fulls else []
            if diffs:
                r.fail(f"layer {i + 1} of the {what} does not read back as its full dump:\n  "
                       + "\n  ".join(diffs))


def _oracle_every_layer(r: Run, layers: list[Path], manifests: list[Manifest],
                        kinds: Sequence[Compression]) -> None:
    for i, layer in enumerate(layers):
        r.check_images(layer, manifests[i], layer_note=f" (layer {i + 1}/{len(layers)}, "
                       f"{kinds[i].name}, step {manifests[i].step})")


def _decompress_chain(r: Run, layers: list[Path], kinds: Sequence[Compression]) -> None:
    """Offer a compressed chain to a criu that cannot read it, then make it plain again."""
    from ..compress import decompress_dir
    from ..images import ImageSet

    top = layers[-1]
    if any(k.enabled for k in kinds) and not r.criu.has_feature(COMPRESS_FEATURE):
        refuse_compressed(r, top)
    with r.stage("decompress"):
        decompress_dir(top, in_place=True, chain=True)
        for layer in layers:
            iset = ImageSet(layer)
            if iset.img_version != 2 or iset.compress:
                r.fail(f"{layer}: img_version {iset.img_version}, compress {iset.compress} "
                       "after decompressing the chain; expected 2 and 0")


def _restore_top(r: Run, layers: list[Path], before: dict[int, ProcState], pid: int,
                 norst: bool) -> None:
    if norst:
        r.stop_workload(pid)
        return
    new_pid = r.restore(layers[-1])
    r.compare_state(before, new_pid)
    r.stop_workload(new_pid)


def _sizes_text(rows: list[tuple[str, str, int, int, str]]) -> str:
    lines = [f"{'layer':<8}{'kind':<12}{'full dump':>14}{'layer':>14}  note"]
    for name, kind, full, layer, note in rows:
        lines.append(f"{name:<8}{kind:<12}{full:>14}{layer:>14}  {note}")
    return "\n".join(lines)


def run_rebased(r: Run) -> None:
    """Full dumps at successive steps (--leave-running, the last one kills the tree),
    rebased into a parent chain with per-layer compression, restored from the top."""
    kinds = r.variant.layers or (r.variant.compression,)
    norst = r.norst
    pid = r.start_workload()
    steps = dump_steps(r, pid, len(kinds))
    if steps is None:
        return
    layers, manifests, before = steps

    fulls = [link_copy(layer, r.path("img-full") / layer.name) for layer in layers]
    rebase_layers(r, layers, kinds)

    _verify(r, layers, fulls, "rebased chain")
    _oracle_every_layer(r, layers, manifests, kinds)
    _decompress_chain(r, layers, kinds)
    _verify(r, layers, fulls, "decompressed chain")
    _restore_top(r, layers, before, pid, norst)


def rebase_layers(r: Run, layers: list[Path], kinds: Sequence[Compression]) -> None:
    """Compress the bottom full dump and rebase each further one onto the layer below,
    each stored as its kind; the sizes are attached to the report."""
    from ..compress import compress_dir
    from ..compress.rebase import rebase_dir

    rows = []
    with r.stage("rebase"):
        for i, (layer, kind) in enumerate(zip(layers, kinds)):
            spec = kind   # carries the variant's acceleration
            full_bytes = _pages_bytes(layer)
            if i == 0:
                note = compress_dir(layer, spec, in_place=True).message if kind.enabled \
                    else "bottom layer, plain"
            else:
                note = rebase_dir(layer, layers[i - 1], spec, in_place=True).message
            rows.append((layer.name, kind.name, full_bytes, _pages_bytes(layer),
                         note.splitlines()[0]))
    r.attach("chain layer sizes (pages bytes)", text=_sizes_text(rows))
    _dumped_every_layer(r, layers)  # as restore will read them: rebased and compressed


def _dumped_every_layer(r: Run, layers: list[Path]) -> None:
    """The after-dump hook once per layer, bottom first, on the images in their final form."""
    for layer in layers:
        r.dumped(layer)


def _pages_bytes(layer: Path) -> int:
    return sum(p.stat().st_size for p in layer.glob("pages-*.img"))


def _tracked_chain(r: Run, snapshots: bool) -> None:
    """criu's own incremental chains: pre-dumps or --leave-running snapshots, both with
    --track-mem and --prev-images-dir, the last layer a final dump."""
    n = len(r.variant.layers) or TRACKED_LAYERS
    kinds = (r.variant.compression,) * n
    norst = r.norst
    pid = r.start_workload()

    def dump_one(i: int, layer: Path, last: bool) -> None:
        extra = ["--track-mem"]
        if i:
            extra += ["--prev-images-dir", f"../{i}"]
        if last or snapshots:
            r.dump(pid, layer, extra, log_name=f"dump-{i + 1}.log", stage=f"dump-{i + 1}",
                   leave_running=norst or not last)
            return
        layer.mkdir(parents=True, exist_ok=True)
        args = ["-t", str(r.criu_pid(pid)), "-D", str(layer), *r.desc.opts, *r.desc.dopts, *extra]
        with r.stage(f"pre-dump-{i + 1}"):
            r.criu_run("pre-dump", args, f"pre-dump-{i + 1}.log", f"pre-dump-{i + 1}")

    steps = dump_steps(r, pid, n, dump_one)
    assert steps is not None  # None only from the default full dumps
    layers, manifests, before = steps
    if not kinds[-1].enabled:
        _dumped_every_layer(r, layers)
    what = "snapshot chain" if snapshots else "pre-dump chain"

    _verify(r, layers, None, f"criu {what}")
    _oracle_every_layer(r, layers, manifests, kinds)
    if kinds[-1].enabled:
        from ..compress import compress_dir

        originals = [link_copy(layer, r.path("img-orig") / layer.name) for layer in layers]
        with r.stage("compress"):
            for layer in layers:  # bottom first: each layer sees version-3 parents
                compress_dir(layer, kinds[-1], in_place=True)
        _dumped_every_layer(r, layers)  # as restore will read them: compressed
        _verify(r, layers, None, f"compressed {what}")
        _oracle_every_layer(r, layers, manifests, kinds)
        _decompress_chain(r, layers, kinds)
        with r.stage("decompress"):
            for orig, layer in zip(originals, layers):
                diffs = compare_dumps(orig, layer)
                if diffs:
                    r.fail(f"layer {layer.name}: decompressed images differ from criu's:\n  "
                           + "\n  ".join(diffs))
    if snapshots and not norst:
        # every snapshot is a complete image set: each must restore and pass by itself
        for i, layer in enumerate(layers[:-1]):
            snap_pid = r.restore(layer, log_name=f"restore-{i + 1}.log",
                                 stage=f"restore-{i + 1}")
            r.stop_workload(snap_pid)
    _restore_top(r, layers, before, pid, norst)


def run_predump(r: Run) -> None:
    _tracked_chain(r, snapshots=False)


def run_snaps(r: Run) -> None:
    _tracked_chain(r, snapshots=True)
