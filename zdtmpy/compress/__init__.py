"""Compressed page images: block codec, streaming pagemap writer, directory conversion, verify.

A library: nothing here knows about criu processes or pytest.
"""

from .chain import chain_problems, same_content, verify_chain
from .codec import CompressionSpec, parse_size
from .convert import ConvertResult, compress_dir, decompress_dir
from .install import recover
from .rebase import rebase_dir
from .verify import Problem, verify_dir

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
