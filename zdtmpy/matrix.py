"""The test matrix: modes and compression settings as values, and which pairs are valid.

Adding a mode is one entry in MODES plus one cycle function (named by `Mode.cycle`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ZdtmError

PAGE_SIZE = 4096


@dataclass(frozen=True)
class Compression:
    """How page images are compressed in a cycle: off, per page, or in regions of N bytes."""

    name: str
    mode: str  # "off" | "page" | "region"
    region_size: int = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


def parse_size(text: str) -> int:
    """'64K', '4M', '262144' -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    mult = units.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in units else t
    if not digits.isdigit():
        raise ValueError(f"not a size: {text!r} (expected bytes or a number with K/M/G)")
    return int(digits) * mult


def compression(name: str) -> Compression:
    """'off', 'page', 'region' (256K), 'region64k', 'region4m', ... -> Compression."""
    key = name.strip().lower()
    if key in ("off", "none", "no"):
        return Compression("off", "off")
    if key in ("page", "per-page", "lz4"):
        return Compression("page", "page")
    if key.startswith("region"):
        size = parse_size(key[len("region"):].lstrip("-") or "256k")
        if size % PAGE_SIZE or not 0 < size <= 4 << 20:
            raise ZdtmError(
                f"compression {name!r}: region size must be a multiple of {PAGE_SIZE} "
                "bytes, at most 4M"
            )
        label = f"{size >> 20}m" if size % (1 << 20) == 0 else f"{size >> 10}k"
        return Compression(f"region{label}", "region", size)
    raise ZdtmError(f"unknown compression {name!r} "
                    "(expected off, page, or region[SIZE], e.g. region64k)")


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
        Mode("stream", "stream:run",
             description="dump and restore through zdtmpy's image streamer"),
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
    compression: Compression  # for a chain: the top layer's
    acceleration: int = 1
    layers: tuple[Compression, ...] = ()  # chains only: bottom layer first

    @property
    def id(self) -> str:
        if self.layers:
            return f"{self.mode.name}-{'+'.join(c.name for c in self.layers)}"
        return f"{self.mode.name}-{self.compression.name}"


def chain_layouts(compressions) -> list[tuple[str, ...]]:
    kinds = [c for c in CHAIN_KINDS if c in compressions]
    pairs = [(a, b) for a in kinds for b in kinds]
    triples = [t for t in CHAIN_TRIPLES if all(c in compressions for c in t)]
    return pairs + triples


def variants(desc, modes, compressions, acceleration=None):
    """The valid (mode, compression) cells for one descriptor.

    A descriptor narrows the run's selection with `modes` / `compress`; `nolazy` drops
    lazy modes.
    """
    chosen_modes = [m for m in modes if not desc.modes or m in desc.modes]
    chosen_comps = [c for c in compressions if not desc.compress or c in desc.compress]
    accel = desc.compress_acceleration or acceleration or 1
    out = []
    for mname in chosen_modes:
        m = mode(mname)
        if m.lazy and desc.has("nolazy"):
            continue
        if m.layered:
            for layout in chain_layouts(chosen_comps):
                layers = tuple(compression(c) for c in layout)
                out.append(Variant(m, layers[-1], accel, layers))
            continue
        for cname in chosen_comps:
            if m.only_off and cname != "off":
                continue
            out.append(Variant(m, compression(cname), accel))
    return out
