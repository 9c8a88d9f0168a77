"""Test descriptors: ZDTM `.desc` files (a Python dict literal) and YAML files.

A `.desc` is parsed with `ast.literal_eval`, never executed: a call, a name or any other
expression is refused. Both formats are validated against one schema and produce a frozen
`Descriptor`. Every error names the file, the key and what was expected.
"""

from __future__ import annotations

import ast
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .codec.spec import size_label
from .errors import DescriptorError

# ZDTM flags and what they mean here (see plugin.py for how each maps to pytest).
KNOWN_FLAGS = {
    "noauto": "runs only when selected by name",
    "crfail": "criu must fail cleanly",
    "excl": "never runs beside another test",
    "suid": "needs root",
    "nolazy": "not run in lazy-pages modes",
    "reqrst": "always restored, even with --zdtm-norst",
    "nouser": "not for user-namespace runs (accepted, no effect here)",
    "samens": "accepted for ZDTM compatibility (no effect here)",
}
KNOWN_FLAVORS = {"h", "ns", "uns"}


def _words(value: Any, what: str) -> tuple[str, ...]:
    """ZDTM writes lists as space-separated strings; YAML may use real lists."""
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError("a string of space-separated words or a list of strings")


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TypeError("a positive integer")
    return value


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return _words(value, what)


def _compress_list(value: Any, what: str) -> tuple[str, ...]:
    # YAML 1.1 reads a bare `off` as False.
    if isinstance(value, list):
        value = ["off" if v is False else v for v in value]
    elif value is False:
        value = "off"
    return _str_list(value, what)


def _api_list(value: Any, what: str) -> tuple[str, ...]:
    apis = _str_list(value, what)
    if not set(apis) <= {"cli", "rpc"}:
        raise TypeError("a list of criu APIs: cli, rpc")
    return apis


def _str_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError("a mapping of names to values")
    return dict(value)


# key -> parser(value, key) raising TypeError("what was expected"). ZDTM's keys, then zdtmpy's.
SCHEMA: dict[str, Callable[[Any, str], Any]] = {
    "flavor": _words,
    "flags": _words,
    "opts": _str,
    "dopts": _str,
    "ropts": _str,
    "feature": _words,
    "arch": _str_list,
    "deps": _str_list,
    "timeout": _positive_int,
    "sysctl": _str_dict,
    # zdtmpy's own keys
    "workload": _str,
    "args": _str_list,
    "modes": _str_list,
    "compress": _compress_list,
    "compress_acceleration": _positive_int,
    "criu_api": _api_list,
    "description": _str,
}


@dataclass(frozen=True)
class Descriptor:
    """One test, as its descriptor file declares it."""

    name: str
    path: Path
    workload: str
    args: tuple[str, ...] = ()
    flavor: tuple[str, ...] = ("h",)
    flags: frozenset[str] = frozenset()
    opts: tuple[str, ...] = ()
    dopts: tuple[str, ...] = ()
    ropts: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    timeout: int | None = None  # a test that needs longer stages than --zdtm-timeout
    modes: tuple[str, ...] = ()  # empty: every mode
    compress: tuple[str, ...] = ()  # empty: every compression setting selected for the run
    compress_acceleration: int | None = None
    criu_api: tuple[str, ...] = ()  # empty: every criu API selected for the run
    description: str = ""
    sysctl: tuple[tuple[str, str], ...] = field(default=())

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def arch_mismatch(self) -> str | None:
        """Why this machine's architecture is not one the test is for, or None."""
        here = platform.machine()
        if self.arch and here not in self.arch:
            return f"test is for {', '.join(self.arch)}, this machine is {here}"
        return None

    def missing_deps(self) -> list[str]:
        return [dep for dep in self.deps if not Path(dep).exists()]


def _literal(text: str, path: Path) -> Any:
    try:
        tree = ast.parse(text, filename=str(path), mode="eval")
    except SyntaxError as exc:
        raise DescriptorError(
            f"{path}:{exc.lineno}: not a dict literal ({exc.msg}); "
            "a .desc holds one Python-style dict of strings, numbers and lists"
        ) from None
    try:
        return ast.literal_eval(tree)
    except ValueError:
        # Find the offending node to point at it: this is where code would have run.
        for node in ast.walk(tree.body):
            if not isinstance(
                node,
                (ast.Dict, ast.List, ast.Tuple, ast.Set, ast.Constant, ast.UnaryOp,
                 ast.USub, ast.UAdd, ast.expr_context),
            ):
                raise DescriptorError(
                    f"{path}:{getattr(node, 'lineno', '?')}: code is not allowed in a "
                    f"descriptor ({ast.unparse(node)!r}); expected only literal values"
                ) from None
        raise DescriptorError(f"{path}: expected only literal values") from None


def _yaml(text: str, path: Path) -> Any:
    import yaml  # lazily: pytest --help must not need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DescriptorError(f"{path}: invalid YAML: {exc}") from None


def load(path: str | Path) -> Descriptor:
    """Read and validate one descriptor file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DescriptorError(f"{path}: cannot read: {exc.strerror}") from None
    raw = _yaml(text, path) if path.suffix in (".yaml", ".yml") else _literal(text, path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DescriptorError(
            f"{path}: expected a mapping of keys to values, got {type(raw).__name__}")
    return from_mapping(raw, path)


def from_mapping(raw: dict[Any, Any], path: Path) -> Descriptor:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in SCHEMA:
            known = ", ".join(sorted(SCHEMA))
            raise DescriptorError(f"{path}: unknown key {key!r} (expected one of: {known})")
        try:
            values[key] = SCHEMA[key](value, key)
        except TypeError as exc:
            raise DescriptorError(
                f"{path}: key {key!r} has {type(value).__name__} {value!r}; expected {exc}"
            ) from None

    flags = frozenset(values.get("flags", ()))
    unknown = sorted(flags - KNOWN_FLAGS.keys())
    if unknown:
        raise DescriptorError(
            f"{path}: key 'flags' has unknown flag {unknown[0]!r} "
            f"(expected some of: {', '.join(sorted(KNOWN_FLAGS))})"
        )
    flavor = values.get("flavor", ("h",))
    bad = sorted(set(flavor) - KNOWN_FLAVORS)
    if bad:
        raise DescriptorError(
            f"{path}: key 'flavor' has unknown flavor {bad[0]!r} (expected some of: h, ns, uns)"
        )

    name = path.stem

    def split(key: str) -> tuple[str, ...]:
        return tuple(values.get(key, "").split())

    opts, dopts = split("opts"), split("dopts")
    # Upstream ZDTM descs ask for compression with criu's own options; here they choose the
    # compression axis instead, and are not passed to a criu that may predate them.
    opts, from_opts = _compression_opts(opts, path, "opts")
    dopts, from_dopts = _compression_opts(dopts, path, "dopts")
    wanted = {**from_opts, **from_dopts}
    if "compress" in wanted and "compress" not in values:
        values["compress"] = (wanted["compress"],)
    if "acceleration" in wanted and "compress_acceleration" not in values:
        values["compress_acceleration"] = wanted["acceleration"]
    return Descriptor(
        name=name,
        path=path,
        workload=values.get("workload", name),
        args=tuple(values.get("args", ())),
        flavor=tuple(flavor),
        flags=flags,
        opts=opts,
        dopts=dopts,
        ropts=split("ropts"),
        features=tuple(values.get("feature", ())),
        arch=tuple(values.get("arch", ())),
        deps=tuple(values.get("deps", ())),
        timeout=values.get("timeout"),
        modes=tuple(values.get("modes", ())),
        compress=tuple(values.get("compress", ())),
        compress_acceleration=values.get("compress_acceleration"),
        criu_api=tuple(values.get("criu_api", ())),
        description=values.get("description", ""),
        sysctl=tuple(sorted((k, str(v)) for k, v in values.get("sysctl", {}).items())),
    )


_COMPRESS_FLAGS = ("--compress", "--compress-region", "--compress-acceleration")


def _compression_opts(words: tuple[str, ...], path: Path,
                      key: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Take criu's compression options out of an option list: (the rest, what they ask)."""
    rest: list[str] = []
    wanted: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word, value = words[i], ""
        flag = word.split("=", 1)[0]
        if flag not in _COMPRESS_FLAGS:
            rest.append(word)
            i += 1
            continue
        if flag != "--compress":
            if "=" in word:
                value = word.split("=", 1)[1]
            elif i + 1 < len(words):
                i += 1
                value = words[i]
            if not value.isdigit():
                raise DescriptorError(f"{path}: key {key!r}: {flag} needs a number of "
                                      f"{'bytes' if 'region' in flag else 'steps'}")
        if flag == "--compress":
            wanted.setdefault("compress", "page")
        elif flag == "--compress-region":
            wanted["compress"] = f"region{size_label(int(value))}"
        else:
            wanted["acceleration"] = int(value)
        i += 1
    return tuple(rest), wanted
