"""Compressed page images: block codec, streaming pagemap writer, directory conversion, verify.

A library: nothing here knows about criu processes or pytest.
"""

from .codec import CompressionSpec, parse_size
from .convert import ConvertResult, compress_dir, decompress_dir
from .install import recover
from .verify import Problem, verify_dir
from .chain import chain_problems, same_content, verify_chain
from .rebase import rebase_dir

__all__ = [
           "CompressionSpec",
           "ConvertResult",
           "Problem",
           "compress_dir",
           "decompress_dir",
           "parse_size",
           "recover",
           "verify_dir",
           "verify_chain",
           "chain_problems",
           "same_content",
           "rebase_dir",
]
