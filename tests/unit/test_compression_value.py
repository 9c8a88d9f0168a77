"""The one compression value: setting names, command options and ids all meet in it."""

import argparse
import subprocess
import sys

import pytest

from zdtmpy.codec import Compression, parse_setting, parse_size
from zdtmpy.codec.options import add_options, spec_from_args, to_argv
from zdtmpy.errors import ImageError, ZdtmError


def parse(argv, default="off"):
    p = argparse.ArgumentParser()
    add_options(p, default=default)
    return spec_from_args(p.parse_args(argv))


@pytest.mark.parametrize("argv, want", [
    ([], Compression("off")),
    (["--compress"], Compression("page")),
    (["--compress", "region64k"], Compression("region", 64 << 10)),
    (["--region", "4M", "--acceleration", "3"], Compression("region", 4 << 20, 3)),
    (["--compress", "page", "--region", "128K"], Compression("region", 128 << 10)),
])
def test_options_give_one_value(argv, want):
    assert parse(argv) == want


def test_default_none_means_unchanged_and_contradictions_are_refused():
    assert parse([], default=None) is None
    with pytest.raises(ZdtmError, match="--region contradicts --compress off"):
        parse(["--compress", "off", "--region", "64K"])
    with pytest.raises(ImageError, match="unknown compression 'zstd'"):
        parse(["--compress", "zstd"])


@pytest.mark.parametrize("value", [Compression("page", acceleration=5),
                                   Compression("region", 64 << 10),
                                   Compression("region", 4 << 20, 2)])
def test_to_argv_is_the_inverse(value):
    assert parse(to_argv(value)) == value


@pytest.mark.parametrize("name", ["off", "page", "region64k", "region256k", "region4m"])
def test_setting_names_round_trip(name):
    assert parse_setting(name).name == name
    assert Compression.from_ids(parse_setting(name).layout_id,
                                parse_setting(name).region_size) == parse_setting(name)


def test_one_size_grammar():
    assert [parse_size(t) for t in ("4096", "64K", "64KiB", "4m", "1G", " 8 kb ")] == \
        [4096, 64 << 10, 64 << 10, 4 << 20, 1 << 30, 8 << 10]
    with pytest.raises(ImageError, match="bad size"):
        parse_size("12Q")


def test_describe_and_block_bytes():
    assert Compression("off").describe() == "plain"
    assert Compression("page").block_bytes == 4096
    assert Compression("region", 64 << 10).describe() == "region 64 KiB"
    assert Compression("region", 64 << 10).block_pages == 16


def test_the_value_and_the_matrix_load_without_lz4():
    code = ("import sys, zdtmpy.plugin, zdtmpy.matrix, zdtmpy.codec\n"
            "zdtmpy.matrix.compression('region64k')\n"
            "assert 'lz4' not in sys.modules, 'lz4 loaded at collection time'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
