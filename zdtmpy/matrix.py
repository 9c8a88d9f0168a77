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
    raise ZdtmError(f"unknown compression {name!r} (expected off, page, or region[SIZE], e.g. region64k)")


ALL_COMPRESSIONS = ("off", "page", "region64k", "region256k", "region4m")


@dataclass(frozen=True)
class Mode:
    """One way of checkpointing and restoring a test."""

    name: str
    cycle: str  # "module:function" under zdtmpy.cycle, imported when the item runs
    lazy: bool = False
    features: tuple[str, ...] = ()  # `criu check --feature` names it needs
    description: str = ""


MODES = {
    m.name: m
    for m in (
        Mode("plain", "plain:run", description="dump, restore, verify"),
    )
}
DEFAULT_MODES = tuple(MODES)


def mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise ZdtmError(f"unknown mode {name!r} (expected one of: {', '.join(MODES)})") from None


@dataclass(frozen=True)
class Variant:
    """One cell of the matrix: a mode and a compression setting."""

    mode: Mode
    compression: Compression
    acceleration: int = 1

    @property
    def id(self) -> str:
        return f"{self.mode.name}-{self.compression.name}"


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
        for cname in chosen_comps:
            out.append(Variant(m, compression(cname), accel))
    return out
