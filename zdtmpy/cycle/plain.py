"""The plain cycle: dump, (compress, verify, decompress), restore, verify."""

from __future__ import annotations

from ..isolation import tree_pids
from . import Run
from .transforms import prepare_for_restore


def run(r: Run) -> None:
    pid = r.start_workload()
    with r.stage("visible-state"):
        before = r.capture_state(pid)
        manifest = r.workload.manifest()
    host_tree = tree_pids(pid)

    images = r.path("img")
    norst = r.options.norst and not r.desc.has("reqrst")
    r.dump(pid, images, leave_running=norst)

    if r.desc.has("crfail"):
        # criu refused cleanly and left the tree running: it must still be intact.
        r.stop_workload(pid)
        return
    if norst:
        r.check_images(images, manifest)
        r.stop_workload(pid)
        return

    r.wait_tree_gone(host_tree)
    r.dumped(images)
    r.check_images(images, manifest)
    restore_dir = prepare_for_restore(r, images, manifest)
    new_pid = r.restore(restore_dir)
    r.compare_state(before, new_pid)
    r.stop_workload(new_pid)
