"""Why an upstream test does not run here, in this flavor and mode: one reason or None.

Every reason starts with a short category ('excluded:', 'noauto:', 'flavor:', 'uid:',
'checkskip:', ...) so the end-of-session summary can count skips by reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import descriptor
from . import hooks
from .flavor import lacks_cap_sys_resource
from .suite import Suite, UpstreamTest

SUPPORTED_FLAVORS = ("h", "ns", "uns")
AS_ROOT_OPTION = "--zdtm-as-root"


@dataclass(frozen=True)
class Context:
    flavor: str
    as_root: bool
    named: bool  # selected by name (-k or an argument): noauto tests run then
    mode: str


def before_collection(test: UpstreamTest, desc: descriptor.Descriptor | None,
                      desc_error: str, ctx: Context) -> str | None:
    """Reasons known from metadata alone (cheap: evaluated for every item)."""
    if test.excluded:
        return f"excluded: {test.excluded}"
    if desc is None:
        return f"descriptor: {desc_error}"
    if ctx.flavor not in desc.flavor:
        return f"flavor: {ctx.flavor} is not among the test's flavors ({' '.join(desc.flavor)})"
    if ctx.flavor not in SUPPORTED_FLAVORS:
        return (f"flavor: {ctx.flavor} is not implemented by zdtmpy's corpus runner "
                f"({', '.join(SUPPORTED_FLAVORS)})")
    if desc.has("noauto") and not ctx.named:
        return "noauto: upstream runs it only when named (select it with -k or by name)"
    if desc.has("crlib"):
        return "crlib: needs criu plugins built from the test directory (not supported)"
    if ctx.mode != "plain" and desc.has("pre-dump-notify"):
        return "pre-dump-notify: needs upstream's pre-dump notification fds"
    # In uns criu owns the test's user namespace, so it may dump any uid there.
    if (not desc.has("suid") and not ctx.as_root and ctx.flavor != "uns"
            and lacks_cap_sys_resource()):
        return ("uid: upstream runs tests not flagged suid as uid 18943, and root here lacks "
                "CAP_SYS_RESOURCE, so criu cannot dump them ('Can't get rlimit'); "
                f"{AS_ROOT_OPTION} runs them as root")
    return None


def at_run(suite: Suite, test: UpstreamTest) -> str | None:
    """Reasons that need running something (the test's .checkskip)."""
    return hooks.checkskip(suite, test)
