"""CRIU's own ZDTM corpus as a second source of tests next to the package's own descriptors
and workloads (`zdtmpy/descs/` + `zdtmpy/workloads/`) and a project's `zdtm_descs`.

Rooms, in the order data flows through them:

* `suite`    -- which upstream tree (`--zdtm-suite PATH|criu`), its test list and metadata
* `makefile` -- the Makefile groups that decide each test's argv (parsed, never run)
* `updesc`   -- an upstream `.desc` -> zdtmpy's `Descriptor` (+ upstream-only facts)
* `gate`     -- why a test cannot run here (exclusion lists, .checkskip, uid, flavor)
* `build`    -- upstream's own Makefile, once per tree and selection, under a lock
* `flavor`   -- the h / ns / uns environments and each ns test's root laid out as upstream's
* `netns`, `mntns`, `pidns`, `ipcns`, `timens` -- the per-test network, mount, (h) PID, IPC
  and time namespaces upstream's `zdtm_ct` gives (`pidns` starts `nsinit.c` as pid 1;
  `unshared`: the thread in a namespace of its own and back, for net, IPC and PID)
* `protocol` -- the upstream start/stop protocol, as the workload interface cycles use
* `hooks`    -- the `.hook` call points; `state` -- upstream's visible-state rules
* `sysprep`  -- hugepages and the `zdtmtst` hierarchies, shared by the machine's sessions
* `firewall`, `leftmounts` -- rules and mounts tests left on the host, removed at the end
* `slice`    -- the representative slice CI runs
* `session`, `nodes`, `report` -- session set-up and teardown, the pytest nodes, the
  per flavor and mode summary lines

Nothing here but `session`, `nodes` and `report` imports pytest.
"""
