"""The codec room, below `images` and `compress`: the compression value and block coding.

* `spec`: `Compression` (layout + region size + acceleration + algorithm), `parse_size`,
  `parse_setting`, the layout ids of the inventory and the stream header;
* `blocks`: the layout's rules (zero / raw / encoded blocks, 7/8 rule) as `BlockCodec`;
* `algorithm`: the small interface an algorithm implements;
* `coding`: `codec_for(compression)` and the LZ4 codec's operations;
* LZ4, the one algorithm: `lz4block` (python-lz4), `lz4native` (ctypes binding and the
  native state's one accessor), `lz4batch` (lz4batch.c, built and self-tested), `lz4codec`.

Imports nothing from images, compress, transport or above. Importing this package loads
only the value (no lz4): the plugin uses it at collection time.
"""

from .spec import (
    DEFAULT_REGION_BYTES,
    LAYOUT_BY_ID,
    LAYOUT_IDS,
    LAYOUTS,
    MAX_REGION_BYTES,
    OFF,
    PAGE_SIZE,
    Compression,
    Layout,
    parse_setting,
    parse_size,
)

__all__ = [
    "DEFAULT_REGION_BYTES", "LAYOUTS", "LAYOUT_BY_ID", "LAYOUT_IDS", "MAX_REGION_BYTES",
    "OFF", "PAGE_SIZE", "Compression", "Layout", "parse_setting", "parse_size",
]
