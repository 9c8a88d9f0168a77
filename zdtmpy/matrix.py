"""The test matrix: test modes and compression settings as values, and which pairs are valid.

Adding a mode is one entry in MODES plus one cycle function (named by `Mode.cycle`). A
compression setting is a `codec.Compression` (its *layout* is not a test mode).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Union

from .codec import Compression, parse_setting
from .errors import ZdtmError

if TYPE_CHECKING:
    from .descriptor import Descriptor

# The compression axis uses the codec's one value and one parser of setting names.
compression = parse_setting

ALL_COMPRESSIONS = ("off", "page", "region64k", "region256k", "region4m")


@dataclass(frozen=True)
class Mode:
    """One way of checkpointing and restoring a test."""

    name: str
    cycle: str  # "module:function" under zdtmpy.cycle, imported when the item runs
    lazy: bool = False
    features: tuple[str, ...] = ()  # `criu check --feature` names it needs
    description: str = ""
    only_off: bool = False  # criu's own servers write plain images: no compression axis
    layered: bool = False  # compression is chosen per layer of a parent chain
    layouts: str = "chain"  # layered modes: which layer mixes ("chain" or "dedup")
    rpc: bool = True  # criu's RPC offers what this mode needs (else cli only)


MODES = {
    m.name: m
    for m in (
        Mode("plain", "plain:run", description="dump, restore, verify"),
        Mode("chain", "chain:run_rebased", layered=True,
             description="successive dumps rebased into a parent chain, restore from the top"),
        Mode("pre", "chain:run_predump", features=("mem_dirty_track",),
             description="criu pre-dump chain, then dump, restore"),
        Mode("snaps", "chain:run_snaps", features=("mem_dirty_track",),
             description="criu dump --leave-running --track-mem snapshots, restore"),
        Mode("page-server", "pageserver:run_zdtmpy",
             description="dump through zdtmpy's page server (compressing), restore"),
        Mode("page-server-criu", "pageserver:run_criu", only_off=True,
             description="dump through criu's own page server, restore"),
        Mode("lazy", "lazy:run_local", lazy=True, features=("uffd",),
             description="criu lazy-pages + restore --lazy-pages"),
        Mode("remote-lazy", "lazy:run_remote_zdtmpy", lazy=True, features=("uffd",),
             description="lazy pages served by zdtmpy's page server from compressed images"),
        Mode("remote-lazy-criu", "lazy:run_remote_criu", lazy=True, features=("uffd",),
             only_off=True, description="lazy pages served by criu page-server --lazy-pages"),
        Mode("stream", "stream:run", rpc=False,
             description="dump and restore through zdtmpy's image streamer"),
        Mode("dedup", "dedup:run_dedup", layered=True, layouts="dedup", rpc=False,
             description="rebased chain, parents deduplicated (criu dedup / zdtmpy dedup), "
                         "restore from the top"),
        Mode("auto-dedup", "dedup:run_auto_dedup", only_off=True,
             features=("mem_dirty_track",),
             description="criu dump --track-mem --auto-dedup chain, restore"),
    )
}
# Modes whose cycle module exists: the default selection.
def implemented_modes() -> tuple[str, ...]:
    import importlib.util

    return tuple(
        name for name, m in MODES.items()
        if importlib.util.find_spec(f"zdtmpy.cycle.{m.cycle.split(':')[0]}") is not None
    )


# Chains: every pair over these, plus 3-layer mixes with a region layer between two others.
CHAIN_KINDS = ("off", "page", "region64k", "region256k")
CHAIN_TRIPLES = (
    ("off", "region64k", "page"),
    ("page", "region256k", "off"),
    ("region64k", "page", "region256k"),
    ("page", "region64k", "region256k"),
)


def mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise ZdtmError(f"unknown mode {name!r} (expected one of: {', '.join(MODES)})") from None


@dataclass(frozen=True)
class Variant:
    """One cell of the matrix: a mode and a compression setting."""

    mode: Mode
    compression: Compression  # for a chain: the top layer's (with the acceleration)
    layers: tuple[Compression, ...] = ()  # chains only: bottom layer first
    api: str = "cli"  # how criu is driven: "cli" or "rpc" (criu swrk)

    @property
    def acceleration(self) -> int:
        return self.compression.acceleration

    @property
    def id(self) -> str:
        if self.layers:
            cell = f"{self.mode.name}-{'+'.join(c.name for c in self.layers)}"
        else:
            cell = f"{self.mode.name}-{self.compression.name}"
        return cell if self.api == "cli" else f"{cell}-{self.api}"


# Dedup: three layers of one kind each (every compression setting selected), plus one mix.
DEDUP_MIXES = (("page", "region64k", "off"),)


def dedup_layouts(compressions: Iterable[str]) -> list[tuple[str, ...]]:
    names = list(dict.fromkeys(compressions))
    same: list[tuple[str, ...]] = [(k, k, k) for k in names]
    return same + [t for t in DEDUP_MIXES if all(c in names for c in t)]


def chain_layouts(compressions: Iterable[str]) -> list[tuple[str, ...]]:
    names = set(compressions)
    kinds = [c for c in CHAIN_KINDS if c in names]
    pairs: list[tuple[str, ...]] = [(a, b) for a in kinds for b in kinds]
    triples: list[tuple[str, ...]] = [t for t in CHAIN_TRIPLES if all(c in names for c in t)]
    return pairs + triples


Setting = Union[str, Compression]


def variants(desc: Descriptor, modes: Sequence[str], compressions: Sequence[Setting],
             acceleration: int | None = None, apis: Sequence[str] = ("cli",)) -> list[Variant]:
    """The valid (mode, compression, criu API) cells for one descriptor.

    A descriptor narrows the run's selection with `modes` / `compress` / `criu_api`;
    `nolazy` drops lazy modes; its `compress_acceleration` wins over the run's; modes
    criu's RPC cannot drive have no rpc cells.
    """
    out: list[Variant] = []
    for api in [a for a in apis if not desc.criu_api or a in desc.criu_api]:
        for v in _cells(desc, modes, compressions, acceleration):
            if api == "cli" or v.mode.rpc:
                out.append(replace(v, api=api))
    return out


def _cells(desc: Descriptor, modes: Sequence[str], compressions: Sequence[Setting],
           acceleration: int | None) -> list[Variant]:
    accel = desc.compress_acceleration or acceleration or 1
    wanted = {compression(c).name for c in desc.compress}
    chosen = {}
    for c in compressions:
        value = c if isinstance(c, Compression) else compression(c)
        if not wanted or value.name in wanted:
            chosen[value.name] = value.with_acceleration(accel)
    chosen_modes = [m for m in modes if not desc.modes or m in desc.modes]
    out = []
    for mname in chosen_modes:
        m = mode(mname)
        if m.lazy and desc.has("nolazy"):
            continue
        if m.layered:
            pick = dedup_layouts if m.layouts == "dedup" else chain_layouts
            for layout in pick(chosen):
                layers = tuple(compression(c, accel) for c in layout)
                out.append(Variant(m, layers[-1], layers))
            continue
        for value in chosen.values():
            if m.only_off and value.enabled:
                continue
            out.append(Variant(m, value))
    return out
