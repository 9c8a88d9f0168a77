"""Compressed page images: block codec, streaming pagemap writer, directory conversion, verify.

A library: nothing here knows about criu processes or pytest.
"""

from ..codec import Compression, parse_setting, parse_size
from .chain import chain_problems, same_content, verify_chain
from .convert import ConvertResult, compress_dir, decompress_dir
from .install import recover
from .rebase import rebase_dir
from .verify import Problem, verify_dir

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
