"""The criu back end seam without running criu: rpc.proto, argument translation, notification
order, the API axis of the matrix."""

from pathlib import Path

import pytest

from zdtmpy import matrix
from zdtmpy.criuapi import backend_for, check_api
from zdtmpy.criuapi.options import to_opts
from zdtmpy.criuapi.rpc import notify_problem
from zdtmpy.criuapi.swrk import messages, req_type
from zdtmpy.descriptor import DescriptorError, from_mapping
from zdtmpy.errors import CriuFailure, ZdtmError
from zdtmpy.images.protoparse import load_messages


def criu_rpc_proto():
    """criu's own rpc.proto, from the source tree the criu under test was built in."""
    from zdtmpy.criu import find_criu
    from zdtmpy.errors import CriuNotFound

    try:
        criu = find_criu()
    except CriuNotFound as exc:
        pytest.skip(f"criu unavailable: {exc}")
    for up in criu.path.resolve().parents:
        candidate = up / "images" / "rpc.proto"
        if candidate.exists():
            return candidate
    pytest.skip(f"no criu source tree (images/rpc.proto) above {criu.path}")


def test_our_rpc_proto_matches_criu_s():
    theirs = load_messages({"rpc.proto": criu_rpc_proto().read_text()})
    ours = messages()
    assert set(theirs) <= set(ours)
    for name, cls in theirs.items():
        mine = ours[name].DESCRIPTOR.fields_by_number
        for number, f in cls.DESCRIPTOR.fields_by_number.items():
            assert number in mine, f"{name}: field {number} ({f.name}) missing"
            assert (mine[number].name, mine[number].type, mine[number].is_repeated) == \
                (f.name, f.type, f.is_repeated), f"{name}.{f.name}"


def test_unknown_fields_survive_a_round_trip():
    resp = messages()["criu_resp"](type=req_type("DUMP"), success=True)
    extra = b"\xa0\x06\x07"  # field 100, varint 7: from a newer criu
    parsed = messages()["criu_resp"]()
    parsed.ParseFromString(resp.SerializeToString() + extra)
    assert parsed.success and parsed.SerializeToString().endswith(extra)


def test_enum_defaults_come_from_the_proto():
    opts = messages()["criu_opts"]()
    assert opts.images_dir_fd == -1 and opts.cpu_cap == 0xFFFFFFFF
    assert opts.pre_dump_mode == 1  # SPLICE


def test_command_line_becomes_criu_opts(tmp_path):
    req = to_opts("dump", ["-t", "42", "-D", str(tmp_path), "--leave-running", "--track-mem",
                           "--prev-images-dir=../1", "--auto-dedup", "--page-server",
                           "--address", "127.0.0.1", "--port", "1234"],
                  messages()["criu_opts"])
    o = req.opts
    assert (o.pid, o.leave_running, o.track_mem, o.parent_img, o.auto_dedup) == \
        (42, True, True, "../1", True)
    assert (o.ps.address, o.ps.port) == ("127.0.0.1", 1234)
    assert req.images_dir == tmp_path


def test_restore_pidfile_is_the_clients_job(tmp_path):
    req = to_opts("restore", ["-D", str(tmp_path), "-d", "--pidfile", str(tmp_path / "p")],
                  messages()["criu_opts"])
    assert req.pidfile == tmp_path / "p"
    assert not req.opts.HasField("pid")


@pytest.mark.parametrize("args, match", [
    (["-D", "x", "--stream"], "option '--stream' has no criu_opts field"),
    (["-t", "abc", "-D", "x"], "-t wants a number|--tree wants a number"),
    (["-t", "1"], "no images directory"),
    (["-D"], "lacks its value"),
])
def test_bad_arguments_are_named(args, match):
    with pytest.raises(CriuFailure, match=match):
        to_opts("dump", args, messages()["criu_opts"])


def test_notification_order():
    assert notify_problem("dump", ["pre-dump", "query-ext-files", "post-dump"]) is None
    assert "out of order" in notify_problem("dump", ["post-dump", "pre-dump"])
    assert "post-resume never arrived" in notify_problem(
        "restore", ["pre-restore", "post-restore", "pre-resume"])


def test_api_axis_in_the_matrix():
    d = from_mapping({}, Path("t.yaml"))
    cells = matrix.variants(d, ["plain", "stream"], ["off"], apis=("cli", "rpc"))
    assert [c.id for c in cells] == ["plain-off", "stream-off", "plain-off-rpc"]
    only = from_mapping({"criu_api": ["rpc"]}, Path("t.yaml"))
    assert [c.id for c in matrix.variants(only, ["plain"], ["off"], apis=("cli", "rpc"))] \
        == ["plain-off-rpc"]
    with pytest.raises(DescriptorError, match="criu_api"):
        from_mapping({"criu_api": ["grpc"]}, Path("t.yaml"))


def test_backend_names():
    assert check_api("rpc") == "rpc"
    with pytest.raises(ZdtmError, match="unknown criu API 'soap'"):
        check_api("soap")
    assert backend_for(object(), "cli").name == "cli"
