"""Compressed page images: block codec, streaming pagemap writer, directory conversion, verify.

A library: nothing here knows about criu processes or pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyexports import loader

if TYPE_CHECKING:
    from ..codec import Compression, parse_setting, parse_size
    from .chain import chain_problems, same_content, verify_chain
    from .convert import ConvertResult, compress_dir, decompress_dir
    from .install import recover
    from .rebase import rebase_dir
    from .verify import Problem, verify_dir

# export -> its module, imported on first use: a streamer that needs `pipeline` alone does
# not load every room (and compile it: some 40-80 ms of its start-up, measured)
_HOMES = {
    "Compression": "..codec", "parse_setting": "..codec", "parse_size": "..codec",
    "chain_problems": ".chain", "same_content": ".chain", "verify_chain": ".chain",
    "ConvertResult": ".convert", "compress_dir": ".convert", "decompress_dir": ".convert",
    "recover": ".install", "rebase_dir": ".rebase", "Problem": ".verify",
    "verify_dir": ".verify",
}


__getattr__ = loader(__name__, _HOMES, globals())


__all__ = [
           "Compression",
           "ConvertResult",
           "Problem",
           "compress_dir",
           "decompress_dir",
           "parse_setting",
           "parse_size",
           "recover",
           "verify_dir",
           "verify_chain",
           "chain_problems",
           "same_content",
           "rebase_dir",
]
