"""CRIU's own ZDTM corpus as a second source of tests next to the package's own descriptors
and workloads (`zdtmpy/descs/` + `zdtmpy/workloads/`) and a project's `zdtm_descs`.

Rooms, in the order data flows through them:

* `suite`    -- which upstream tree (`--zdtm-suite PATH|criu`), its test list and metadata
* `makefile` -- the Makefile groups that decide each test's argv (parsed, never run)
* `updesc`   -- an upstream `.desc` -> zdtmpy's `Descriptor` (+ upstream-only facts)
* `gate`     -- why a test cannot run here (exclusion lists, .checkskip, uid, flavor)
* `build`    -- upstream's own Makefile, once per tree and selection, under a lock
* `flavor`   -- the h / ns environments and the ns root (set up once per worker)
* `protocol` -- the upstream start/stop protocol, as the workload interface cycles use
* `hooks`    -- the `.hook` call points
* `sysstate` -- system-wide settings saved at session start and restored at its end
* `nodes`    -- the pytest nodes; `report` -- the per flavor and mode summary lines

Nothing here but `nodes` and `report` imports pytest.
"""
