"""zdtmpy: ZDTM-style integration tests for CRIU, as a pytest plugin.

Heavy parts (cffi, lz4, protobuf) are imported lazily by the modules that need them, so
importing the plugin works on a machine without a C compiler or criu.
"""

__version__ = "0.1.0"
