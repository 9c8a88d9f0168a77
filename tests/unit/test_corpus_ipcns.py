"""The private IPC namespace corpus items run in: real namespaces, real SysV objects."""

from __future__ import annotations

import os
import subprocess

import pytest

from zdtmpy.corpus.ipcns import current, private_ipcns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="IPC namespaces need root")


def _shm_ids() -> list[tuple[str, str]]:
    """(key, shmid) of the shared memory segments a child of this thread sees."""
    out = subprocess.run(["cat", "/proc/sysvipc/shm"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [(line.split()[0], line.split()[1]) for line in out.splitlines()[1:]]


def test_objects_made_inside_stay_inside_and_vanish():
    home = current()
    with private_ipcns() as inner:
        assert inner != home
        assert _shm_ids() == []  # nothing of the host's
        subprocess.run(["ipcmk", "-M", "4096"], check=True, capture_output=True, timeout=30)
        made = _shm_ids()
        assert len(made) == 1
    assert current() == home
    assert made[0] not in _shm_ids()  # never on the host


def test_home_is_restored_when_the_body_fails():
    home = current()
    with pytest.raises(RuntimeError, match="boom"), private_ipcns():
        raise RuntimeError("boom")
    assert current() == home
