"""pytest nodes for the upstream corpus: one collector per suite and flavor, one item per
test x mode x compression, e.g. `criu-4.1.1[ns]::zdtm/static/maps00[plain-region256k]`.

Items are `ZdtmItem`s with their own workload launcher and hook calls, so every cycle runs
them unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .. import marker, matrix
from ..errors import DescriptorError, ZdtmError
from ..items import SELECTION_KEY, ZdtmItem
from . import build, gate, hooks
from .flavor import NsRoot, base_env, first_dep, short_alias, uid_env, unmount_below
from .protocol import UpstreamWorkload
from .report import MARKER
from .suite import Suite, UpstreamTest
from .updesc import load as load_desc

if TYPE_CHECKING:
    from ..cycle import Run
    from ..descriptor import Descriptor
    from ..items import Selection
    from .pidns import ItemPidNs

NS_ROOT_KEY = pytest.StashKey[NsRoot]()
BUILT_KEY = pytest.StashKey[set[Suite]]()   # suites built in this process
NS_FLAVORS = ("ns", "uns")  # the test library makes the namespaces, criu gets --root


class SuiteFlavor(pytest.Collector):
    """One upstream suite in one flavor."""

    def __init__(self, *, suite: Suite, flavor: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.suite = suite
        self.flavor = flavor

    def collect(self) -> Iterator[CorpusItem]:
        sel = self.config.stash[SELECTION_KEY]
        named = (" ".join(self.config.args) + " " + (self.config.getoption("keyword") or "")
                 + " " + " ".join(self.config.getoption("zdtm_corpus_tests") or []))
        as_root = bool(self.config.getoption("zdtm_as_root"))
        ns_root = ns_root_of(self.config) if self.flavor in NS_FLAVORS else None
        only = wanted_tests(self.config)
        for test in self.suite.tests():
            if only is not None and test.short not in only:
                continue
            desc, desc_error = None, ""
            try:
                desc = load_desc(test.file(self.suite, ".desc"), test.name)
            except DescriptorError as exc:
                desc_error = str(exc)
            if desc is not None and ns_root is not None:
                opts, dopts, ropts = ns_root.criu_opts()
                desc = dataclasses.replace(desc, opts=desc.opts + opts,
                                           dopts=desc.dopts + dopts, ropts=desc.ropts + ropts)
            if desc is not None and self.flavor == "uns":  # upstream drops uns without it
                desc = dataclasses.replace(desc, features=(*desc.features, "userns"))
            cells = _cells(desc, sel)
            for variant in cells:
                ctx = gate.Context(self.flavor, as_root, test.short in named,
                                   variant.mode.name)
                why = gate.before_collection(test, desc, desc_error, ctx)
                yield CorpusItem.from_parent(
                    self, name=f"{test.name}[{variant.id}]", desc=desc or _stub(test),
                    variant=variant, test=test, suite=self.suite, flavor=self.flavor,
                    gate_reason=why, as_root=as_root)


def wanted_tests(config: pytest.Config) -> set[str] | None:
    """--zdtm-corpus-tests: the short names to collect, or None for all."""
    from .slice import ISOLATION, SLICE

    values = config.getoption("zdtm_corpus_tests")
    if not values:
        return None
    names: set[str] = set()
    for value in values:
        for word in value.split():
            names.update(SLICE + ISOLATION if word == "slice" else (word,))
    return names


def _cells(desc: Descriptor | None, sel: Selection) -> list[matrix.Variant]:
    if desc is None:
        return [matrix.Variant(matrix.mode("plain"), matrix.compression("off"))]
    try:
        return matrix.variants(desc, sel.modes, sel.compressions, sel.acceleration)
    except ZdtmError:
        return [matrix.Variant(matrix.mode("plain"), matrix.compression("off"))]


def _stub(test: UpstreamTest) -> Descriptor:
    from ..descriptor import Descriptor

    return Descriptor(name=test.name, path=Path(test.name), workload=test.name)


def _categorized(reason: str) -> str:
    """zdtmpy's generic skip reasons, with a category for the summary."""
    for word, category in (("feature", "feature"), ("dependency", "deps"),
                           ("test is for", "arch"), ("criu unavailable", "criu"),
                           ("mode ", "mode"), ("root", "root")):
        if word in reason:
            return f"{category}: {reason}"
    return reason


def _allow_userfaultfd_in_userns() -> None:
    """uns x lazy: criu's restored tasks open their userfaultfd inside the test's user
    namespace, which the kernel refuses (EPERM) unless vm.unprivileged_userfaultfd is 1.
    Set for the item; the last zdtmpy session on the machine puts the value found back."""
    from .. import sysstate

    try:
        sysstate.ensure("vm/unprivileged_userfaultfd")
    except OSError as exc:
        raise ZdtmError("flavor uns in a lazy mode needs vm.unprivileged_userfaultfd=1 (the "
                        "kernel refuses userfaultfd in a user namespace otherwise), and "
                        f"setting it failed: {exc}") from None


def ns_root_of(config: pytest.Config) -> NsRoot:
    if NS_ROOT_KEY not in config.stash:
        from ..runner import results_root

        config.stash[NS_ROOT_KEY] = NsRoot.for_worker(results_root(config))
    return config.stash[NS_ROOT_KEY]


class CorpusItem(ZdtmItem):
    """One upstream test in one flavor, mode and compression setting."""

    corpus = True

    def __init__(self, *, test: UpstreamTest, suite: Suite, flavor: str,
                 gate_reason: str | None, as_root: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self.test = test
        self.suite = suite
        self.flavor = flavor
        self.gate_reason = gate_reason
        self.as_root = as_root
        self._workload: UpstreamWorkload | None = None
        self._hook_cwd: Path | None = None
        self._tmpdir = Path("/nonexistent")  # the item's TMPDIR for its hooks (launch)
        self._mark: dict[str, str] = {}
        self.add_marker(MARKER)
        # Short: tests put unix sockets under it, and sun_path holds only 108 bytes.
        self.workdir_name = re.sub(r"[^A-Za-z0-9_.+-]+", "-",
                                   f"{test.subdir[0]}-{test.short}-{self.variant.id}")
        self._ns_root: Path | None = None
        self._pidns: ItemPidNs | None = None  # flavor h: the test's PID namespace
        if flavor in NS_FLAVORS:  # a root of its own; it runs in <root>/zdtm/<subdir>, as upstream
            # Named by flavor too: ns and uns items of one test may run at once on two workers.
            self._ns_root = ns_root_of(self.config).items / f"{flavor}-{self.workdir_name}"
            self.workdir_parent = self._ns_root / "zdtm"
            self.workdir_name = test.subdir

    def setup(self) -> None:
        if self.gate_reason:
            raise pytest.skip.Exception(self.gate_reason, _use_item_location=True)
        from ..runner import skip_reason

        why = skip_reason(self.config, self.desc, self.variant)
        if why:
            raise pytest.skip.Exception(_categorized(why), _use_item_location=True)
        why = gate.at_run(self.suite, self.test)
        if why:
            raise pytest.skip.Exception(why, _use_item_location=True)
        built = self.config.stash.setdefault(BUILT_KEY, set())
        if self.suite not in built:  # once per process: every selected test of this suite
            selected = [i.test for i in self.session.items
                        if isinstance(i, CorpusItem) and i.suite == self.suite
                        and not i.gate_reason]
            build.ensure_built(self.suite, selected)
            built.add(self.suite)

    def runtest(self) -> None:
        # As upstream's zdtm_ct, for every flavor: the test, its hooks and criu in a network
        # namespace of their own, so fixed ports, host links (macvlan's zdtmbr0) and firewall
        # rules never meet another test's, an IPC namespace (SysV keys; what a failing test
        # leaves goes with it) and a time namespace with clocks ahead; ns and uns also in a
        # mount namespace of their own, so what they mount (the root, /dev, mnt_ext_*'s
        # /tmp/zdtm_ext_*) stays there. The test library makes ns and uns tests a PID
        # namespace; h gets one here (pidns.py), with its /proc (corpus cells are cli only:
        # criu's RPC would open our fds by our pid).
        from .ipcns import private_ipcns
        from .mntns import hold_binfmt_misc, private_mountns
        from .netns import private_netns
        from .pidns import private_pidns
        from .timens import private_timens

        if self.flavor == "uns" and self.variant.mode.lazy:
            _allow_userfaultfd_in_userns()
        with contextlib.ExitStack() as inside:
            inside.enter_context(private_netns())
            inside.enter_context(private_ipcns())
            inside.enter_context(private_timens())  # before the first child (nsinit)
            if self.flavor != "h":
                inside.enter_context(private_mountns())
                hold_binfmt_misc()
            elif self.variant.api == "cli":
                self._pidns = inside.enter_context(private_pidns())
            try:
                return super().runtest()
            finally:
                self._pidns = None

    def teardown(self) -> None:
        super().teardown()
        # The test's root goes with its directory (kept after a failure, or on --zdtm-keep).
        if self._ns_root is not None and self.run_state is not None \
                and not self.run_state.workdir.exists():
            shutil.rmtree(self._ns_root, ignore_errors=True)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.suite.zdtm / self.test.subdir, 0, f"{self.name} ({self.flavor})"

    # -- what the cycle calls ------------------------------------------------------------
    def launch(self, run: Run) -> UpstreamWorkload:
        with run.stage("build"):
            exe = build.require(self.suite, self.test)
        env = base_env("/tmp")
        env.update(uid_env(self.as_root, self.desc.has("suid")))
        # The session's process marker (not read by upstream): cleanup and sweeps find the
        # test's processes by it, restored ones included.
        self._mark = {marker.VAR: run.env()[marker.VAR]}
        env.update(self._mark)
        if self.desc.has("pre-dump-notify"):
            env.update(ZDTM_NOTIFY_FDIN="100", ZDTM_NOTIFY_FDOUT="101")  # as upstream
        run.on_cleanup(lambda: unmount_below(run.workdir))
        if env.get("ZDTM_UID") or self.flavor == "uns":
            os.chmod(run.workdir, 0o777)  # upstream opens the test's directory for its uid
        if self._ns_root is not None:
            ns = ns_root_of(self.config)
            with run.stage("setup"):
                deps = [d for d in (first_dep(x) for x in self.desc.deps) if d]
                ns.prepare(self._ns_root, [str(exe), *deps])
                ns.enter(self._ns_root)
                if self.flavor == "uns":
                    ns.open_for_userns(self._ns_root)
            env.update(ns.env(userns=self.flavor == "uns"))
            cwd = ns.root / run.workdir.relative_to(self._ns_root)
            self._tmpdir = self._ns_root / "tmp"   # the test's /tmp (TMPDIR=/tmp in its root)
        else:
            cwd = short_alias(run.workdir)
            run.on_cleanup(lambda: cwd.unlink(missing_ok=True))
            env["PWD"] = str(cwd)
            # upstream's is the host's /tmp: here the test's directory holds it, and what
            # the test or its hooks leave there goes with the directory
            self._tmpdir = run.workdir / ".tmp"
            self._tmpdir.mkdir()
            os.chmod(self._tmpdir, 0o1777)   # as /tmp: the test may run as upstream's uid
            env["TMPDIR"] = str(cwd / ".tmp")
        spawned = None
        relative = any(o.startswith("../") for o in (*self.desc.opts, *self.desc.dopts,
                                                      *self.desc.ropts))
        if relative or hooks.has_hook(self.suite, self.test):
            self._hook_cwd = hooks.hook_view(self.suite, self.test, run.workdir)
        if relative and self._hook_cwd is not None:
            view, d = self._hook_cwd, run.desc
            run.desc = dataclasses.replace(
                d, opts=hooks.upstream_relative(d.opts, self.test, view),
                dopts=hooks.upstream_relative(d.dopts, self.test, view),
                ropts=hooks.upstream_relative(d.ropts, self.test, view))
        if hooks.has_hook(self.suite, self.test):

            def spawned(pid: int) -> None:
                with run.stage("hook post-start"):
                    hooks.run_hook(self.suite, self.test, "--post-start", self._tmpdir,
                                   self._ns_pid(pid),
                                   cwd=self._hook_cwd, mark=self._mark)
        self._workload = UpstreamWorkload(self.test, exe, run.workdir, env,
                                          start_timeout=run.timeout(), cwd=cwd,
                                          on_spawned=spawned, flavor=self.flavor,
                                          pidns=self._pidns,
                                          link_remap="--link-remap" in (*self.desc.opts,
                                                                       *self.desc.dopts))
        run.pidns = self._pidns
        run.attach(f"{self.test.short}.out.inprogress (the test's log while it runs)",
                   self._workload.inprogress)
        if hooks.has_hook(self.suite, self.test):
            run.on_cleanup(lambda: hooks.run_hook(self.suite, self.test, "--clean", self._tmpdir,
                                                  cwd=self._hook_cwd, mark=self._mark))
        return self._workload

    def event(self, point: str, pid: int | None, images: Path | None) -> None:
        if point == "post-start":
            return  # called by the launcher while the test starts, as upstream does
        run = self.run_state
        if point == "post-restore" and pid is not None and self._workload is not None \
                and run is not None:
            wl, restored = self._workload, pid
            run.on_cleanup(lambda: wl._kill_tree(restored))
        if not hooks.has_hook(self.suite, self.test):
            return
        if pid is None and self._workload is not None:
            hook_pid = self._workload.written_pid  # as the test saw itself (alive or not)
        else:
            hook_pid = self._ns_pid(pid)
        hooks.run_hook(self.suite, self.test, f"--{point}", self._tmpdir, hook_pid, images,
                       cwd=self._hook_cwd, mark=self._mark)

    def _ns_pid(self, pid: int | None) -> int | None:
        """A host pid as the test's hooks see it (from inside its PID namespace, as
        upstream's, which run inside zdtm_ct)."""
        return pid if pid is None or self._pidns is None else self._pidns.to_ns(pid)
