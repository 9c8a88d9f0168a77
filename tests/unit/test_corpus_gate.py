"""Which flavor skips what: the uid rule is a fact of h and ns only."""

from __future__ import annotations

from pathlib import Path

import pytest

from zdtmpy.corpus import gate
from zdtmpy.corpus.flavor import lacks_cap_sys_resource
from zdtmpy.corpus.suite import UpstreamTest
from zdtmpy.descriptor import Descriptor


def _test() -> UpstreamTest:
    return UpstreamTest(name="zdtm/static/pipe00", subdir="static", short="pipe00", argv=())


def _desc(*flags: str) -> Descriptor:
    return Descriptor(name="zdtm/static/pipe00", path=Path("pipe00.desc"),
                      workload="pipe00", flavor=("h", "ns", "uns"), flags=frozenset(flags))


def _why(flavor: str, *flags: str, as_root: bool = False) -> str | None:
    return gate.before_collection(_test(), _desc(*flags), "",
                                  gate.Context(flavor, as_root, False, "plain"))


@pytest.mark.skipif(not lacks_cap_sys_resource(), reason="root here has CAP_SYS_RESOURCE")
def test_uid_rule_skips_h_and_ns_but_not_uns():
    for flavor in ("h", "ns"):
        why = _why(flavor)
        assert why is not None and why.startswith("uid: ") and "--zdtm-as-root" in why
        assert _why(flavor, as_root=True) is None
        assert _why(flavor, "suid") is None
    assert _why("uns") is None


def test_a_flavor_the_test_lacks_is_a_flavor_skip():
    desc = Descriptor(name="zdtm/static/pipe00", path=Path("pipe00.desc"), workload="pipe00",
                      flavor=("h", "ns"))
    why = gate.before_collection(_test(), desc, "", gate.Context("uns", True, False, "plain"))
    assert why == "flavor: uns is not among the test's flavors (h ns)"
