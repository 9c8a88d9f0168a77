"""The private network namespace flavor-h corpus items run in: real namespaces, real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from zdtmpy.corpus.netns import current, private_netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _listen(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_body_runs_in_a_new_namespace_and_returns_home():
    home = current()
    with private_netns() as inner:
        assert inner != home
        assert current() == inner
    assert current() == home


def test_children_are_born_in_it_with_loopback_up():
    with private_netns() as inner:
        child = subprocess.run(
            [sys.executable, "-c",
             "import os, socket; print(os.readlink('/proc/self/ns/net'));"
             "s = socket.create_connection(('127.0.0.1', int(os.environ['P'])), timeout=5);"
             "print('connected')"],
            env={**os.environ, "P": str(_port_listening_here())}, capture_output=True,
            text=True, timeout=30)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [inner, "connected"]


def _port_listening_here() -> int:
    s = _listen()
    _keep.append(s)  # closed by the fixture below, after the child connected
    return s.getsockname()[1]


_keep: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_kept():
    yield
    while _keep:
        _keep.pop().close()


def test_a_port_taken_outside_is_free_inside():
    outside = _listen()
    port = outside.getsockname()[1]
    try:
        with pytest.raises(OSError):
            _listen(port).close()
        with private_netns():
            inside = _listen(port)  # same port, no EADDRINUSE: the namespaces do not meet
            inside.close()
    finally:
        outside.close()


def test_home_is_restored_when_the_body_fails():
    home = current()
    with pytest.raises(RuntimeError, match="boom"), private_netns():
        raise RuntimeError("boom")
    assert current() == home


def test_checkskip_scripts_run_in_a_network_namespace_of_their_own(tmp_path):
    """macvlan's and cr_veth's .checkskip add links where they run: as under zdtm_ct, never
    in the runner's network namespace."""
    from zdtmpy.corpus import hooks
    from zdtmpy.corpus.suite import Suite, UpstreamTest

    static = tmp_path / "test" / "zdtm" / "static"
    static.mkdir(parents=True)
    seen = tmp_path / "seen"
    script = static / "probe.checkskip"
    script.write_text(f"#!/bin/sh\nreadlink /proc/self/ns/net > {seen}\nexit 1\n")
    script.chmod(0o755)
    test = UpstreamTest(name="zdtm/static/probe", subdir="static", short="probe", argv=())
    why = hooks.checkskip(Suite(static.parent), test)
    assert why is not None and "probe.checkskip exited 1" in why
    assert seen.read_text().strip() not in ("", current())
