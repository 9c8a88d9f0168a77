"""CRIU image files: framing, messages, pagemaps, and a page reader over parent chains.

A library: nothing here knows about criu processes or pytest.
"""

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
from .imageset import ImageSet, load_chain
from .pagemap import PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PAYLOAD_ALIGNED, PE_PRESENT, Entry, Pagemap
from .reader import PageLocation, PageReader, Vma

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
