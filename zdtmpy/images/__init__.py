"""CRIU image files: framing, messages, pagemaps, and a page reader over parent chains.

A library: nothing here knows about criu processes or pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyexports import loader
from .framing import (
    COMMON_MAGIC,
    CORE_MAGIC,
    INVENTORY_MAGIC,
    MM_MAGIC,
    PAGEMAP_MAGIC,
    PSTREE_MAGIC,
    SERVICE_MAGIC,
    STATS_MAGIC,
    RawImage,
    read_image,
    write_image,
)

if TYPE_CHECKING:
    from .imageset import ImageSet, load_chain
    from .pagemap import (
        PAGE_SIZE,
        PE_LAZY,
        PE_PARENT,
        PE_PAYLOAD_ALIGNED,
        PE_PRESENT,
        Entry,
        Pagemap,
    )
    from .reader import PageLocation, PageReader, Vma

# export -> its module, imported on first use (pagemap, imageset and reader load the
# protobuf messages: a streamer that needs safeopen or framing alone does not pay for them)
_HOMES = {
    "ImageSet": ".imageset", "load_chain": ".imageset", "PageLocation": ".reader",
    "PageReader": ".reader", "Vma": ".reader",
    **dict.fromkeys(["PAGE_SIZE", "PE_LAZY", "PE_PARENT", "PE_PAYLOAD_ALIGNED", "PE_PRESENT",
                     "Entry", "Pagemap"], ".pagemap"),
}


__getattr__ = loader(__name__, _HOMES, globals())


__all__ = [
                      "COMMON_MAGIC",
                      "CORE_MAGIC",
                      "INVENTORY_MAGIC",
                      "MM_MAGIC",
                      "PAGEMAP_MAGIC",
                      "PAGE_SIZE",
                      "PE_LAZY",
                      "PE_PARENT",
                      "PE_PAYLOAD_ALIGNED",
                      "PE_PRESENT",
                      "PSTREE_MAGIC",
                      "SERVICE_MAGIC",
                      "STATS_MAGIC",
                      "Entry",
                      "ImageSet",
                      "PageLocation",
                      "PageReader",
                      "Pagemap",
                      "RawImage",
                      "Vma",
                      "load_chain",
                      "read_image",
                      "write_image",
]
