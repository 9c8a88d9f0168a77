"""Hooks zdtmpy adds to pytest, for conftest.py files and other plugins."""


from __future__ import annotations

from pathlib import Path

import pytest


def pytest_zdtm_after_dump(item: pytest.Item, images: Path) -> None:
    """Called after a dump has finished and the dumped tree is gone, before any check of
    the images and before the restore. `images` is the image directory (a pathlib.Path).
    A conftest may inspect or change the images here (for example to prove that a broken
    image is caught). In chain modes it is called once per layer, bottom first, after the
    layers are rebased and compressed: on the images restore will read."""
