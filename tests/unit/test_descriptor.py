"""Descriptors: ZDTM .desc and YAML, read safely and validated."""

import pytest

from zdtmpy import descriptor
from zdtmpy.errors import DescriptorError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_zdtm_desc_words_and_defaults(tmp_path):
    d = descriptor.load(write(tmp_path, "maps00.desc",
                              "{'flavor': 'h ns', 'flags': 'suid excl', 'opts': '--shell-job  -v4',"
                              " 'feature': 'uffd', 'arch': 'x86_64', 'deps': ['/bin/sh']}"))
    assert d.name == "maps00" and d.workload == "maps00"
    assert d.flavor == ("h", "ns")
    assert d.flags == frozenset({"suid", "excl"})
    assert d.opts == ("--shell-job", "-v4")
    assert d.features == ("uffd",)
    assert d.arch == ("x86_64",) and d.deps == ("/bin/sh",)
    assert d.timeout is None


def test_yaml_with_zdtmpy_keys(tmp_path):
    d = descriptor.load(write(tmp_path, "t.yaml",
                              "workload: pages02\nargs: [--big]\narch: [x86_64, aarch64]\n"
                              "modes: [plain]\ncompress: [off, page]\nflags: [nolazy]\n"))
    assert d.workload == "pages02" and d.args == ("--big",)
    assert d.arch == ("x86_64", "aarch64")
    assert d.modes == ("plain",) and d.compress == ("off", "page")
    assert d.has("nolazy") and not d.has("excl")


def test_empty_desc_is_valid(tmp_path):
    assert descriptor.load(write(tmp_path, "x.desc", "{}")).flags == frozenset()


@pytest.mark.parametrize("text, expected", [
    ("{'optz': ''}", "unknown key 'optz'"),
    ("{'flags': 'crfail bogus'}", "unknown flag 'bogus'"),
    ("{'timeout': 'ten'}", "key 'timeout' has str 'ten'; expected a positive integer"),
    ("{'flags': 3}", "key 'flags' has int 3"),
    ("{'flavor': 'vm'}", "unknown flavor 'vm'"),
    ("['a']", "expected a mapping"),
    ("{'opts': ", "not a dict literal"),
])
def test_malformed_desc_names_file_and_key(tmp_path, text, expected):
    p = write(tmp_path, "bad.desc", text)
    with pytest.raises(DescriptorError) as exc:
        descriptor.load(p)
    assert str(p) in str(exc.value)
    assert expected in str(exc.value)


def test_code_in_desc_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    p = write(tmp_path, "evil.desc",
              f"{{'opts': __import__('os').system('touch {marker}')}}")
    with pytest.raises(DescriptorError, match="code is not allowed"):
        descriptor.load(p)
    assert not marker.exists()


def test_yaml_is_loaded_safely(tmp_path):
    p = write(tmp_path, "evil.yaml", "opts: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(DescriptorError, match="invalid YAML"):
        descriptor.load(p)


def test_arch_and_deps_reasons(tmp_path):
    d = descriptor.load(write(tmp_path, "a.yaml", "arch: [no-such-arch]\ndeps: [/no/such/dep]\n"))
    assert "test is for no-such-arch" in d.arch_mismatch()
    assert d.missing_deps() == ["/no/such/dep"]


def test_upstream_compression_options_choose_the_axis(tmp_path):
    d = descriptor.load(write(tmp_path, "z.desc",
                              "{'dopts': '--compress --compress-region 65536 "
                              "--compress-acceleration=4 --ghost-limit 1M'}"))
    assert d.compress == ("region64k",)
    assert d.compress_acceleration == 4
    assert d.dopts == ("--ghost-limit", "1M")  # the rest still goes to criu
    d = descriptor.load(write(tmp_path, "p.desc", "{'opts': '--compress'}"))
    assert d.compress == ("page",) and d.opts == ()


def test_bad_upstream_compression_option(tmp_path):
    with pytest.raises(DescriptorError, match="--compress-region needs a number of bytes"):
        descriptor.load(write(tmp_path, "b.desc", "{'dopts': '--compress-region'}"))
