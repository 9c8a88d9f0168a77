"""Where the product's built-in parts live: inside the package, so an installed wheel runs
the built-in matrix without a clone (`pytest --pyargs zdtmpy.descs`)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def workloads_dir() -> Path:
    """The built-in C workloads (<name>.c) and the C test library (lib/)."""
    return PACKAGE_DIR / "workloads"


def descs_dir() -> Path:
    """The default descriptors: the built-in test matrix."""
    return PACKAGE_DIR / "descs"
