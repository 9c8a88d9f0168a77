"""A package's exports imported on first use (a module `__getattr__`, PEP 562).

`compress` and `images` name many exports; importing all of their modules up front costs a
streamer or a CLI command that needs one of them some 40-80 ms of start-up (measured). Each
keeps a map export -> module and gets its `__getattr__` from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def loader(package: str, homes: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The `__getattr__` of `package`: import the export's module (relative names are
    relative to `package`), keep the value in `namespace` (the package's globals) so the
    next lookup does not come here."""
    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        namespace[name] = value
        return value

    return __getattr__
