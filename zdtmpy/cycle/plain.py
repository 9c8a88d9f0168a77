"""The plain cycle: dump, (compress, verify, decompress), restore, verify."""

from __future__ import annotations

from . import Run
from .transforms import prepare_for_restore


def run(r: Run) -> None:
    w = r.start_recorded()
    images = r.path("img")
    r.dump(w.pid, images, leave_running=r.norst)

    if r.desc.has("crfail"):
        # criu refused cleanly and left the tree running: it must still be intact.
        r.stop_workload(w.pid)
        return
    if r.norst:
        r.check_images(images, w.manifest)
        r.stop_workload(w.pid)
        return

    r.wait_tree_gone(w.host_tree)
    r.dumped(images)
    r.check_images(images, w.manifest)
    restore_dir = prepare_for_restore(r, images, w.manifest)
    r.verify_restored(w, r.restore(restore_dir))
