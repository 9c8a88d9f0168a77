"""The matrix: compression names, sizes, valid cells per descriptor."""

from pathlib import Path

import pytest

from zdtmpy import matrix
from zdtmpy.descriptor import from_mapping
from zdtmpy.errors import ZdtmError


@pytest.mark.parametrize("name, layout, size, label", [
    ("off", "off", 256 << 10, "off"),
    ("page", "page", 256 << 10, "page"),
    ("region", "region", 256 << 10, "region256k"),
    ("region64k", "region", 64 << 10, "region64k"),
    ("region-4M", "region", 4 << 20, "region4m"),
])
def test_compression_names(name, layout, size, label):
    c = matrix.compression(name)
    assert (c.layout, c.region_size, c.name) == (layout, size, label)


@pytest.mark.parametrize("bad", ["region5000", "region8m", "zstd", "region0k"])
def test_bad_compression_is_refused(bad):
    with pytest.raises(ZdtmError):
        matrix.compression(bad)


def test_descriptor_narrows_cells():
    d = from_mapping({"compress": ["off", "page"], "compress_acceleration": 4}, Path("t.yaml"))
    cells = matrix.variants(d, ["plain"], ["off", "page", "region64k"])
    assert [c.id for c in cells] == ["plain-off", "plain-page"]
    assert all(c.acceleration == 4 for c in cells)


def test_unknown_mode():
    with pytest.raises(ZdtmError, match="unknown mode 'warp'"):
        matrix.mode("warp")
