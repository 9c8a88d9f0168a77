"""The criu of this pytest run, found once per process and kept in `config.stash`.

The runner, the report collector, the corpus and the plugin's hooks all ask here, so none of
them imports another for it. An xdist worker takes the controller's choice from its
workerinput (see plugin.pytest_configure_node).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .errors import CriuNotFound

if TYPE_CHECKING:
    from .criu import Criu

# a Criu, or the CriuNotFound explaining its absence
CRIU_KEY = pytest.StashKey["Criu | CriuNotFound"]()


def criu_of(config: pytest.Config) -> Criu | CriuNotFound:
    """The criu of this run (or why there is none)."""
    found = config.stash.get(CRIU_KEY, None)
    if found is None:
        from .criu import Criu, find_criu

        # a worker: the controller's criu, already probed (see Criu.handoff)
        handed = getattr(config, "workerinput", {}).get("zdtmpy_criu")
        try:
            found = (Criu.from_handoff(handed) if isinstance(handed, dict)
                     else find_criu(config.getoption("criu_bin")))
        except CriuNotFound as exc:
            found = exc
        config.stash[CRIU_KEY] = found
    return found
