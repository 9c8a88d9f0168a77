"""Errors a user can meet. Each message names the file, test or stage and what was expected."""


class ZdtmError(Exception):
    """Base class: printed as-is by the CLI and the plugin, never with a traceback."""


class DescriptorError(ZdtmError):
    """A descriptor file is malformed: names the file, the key and what was expected."""


class CriuNotFound(ZdtmError):
    """No usable criu: missing, too old, or failing `criu check`."""


class CriuFailure(ZdtmError):
    """A criu action failed: names the stage, exit status and the relevant log lines."""


class BuildError(ZdtmError):
    """A C workload failed to compile: carries the compiler output."""


class WorkloadError(ZdtmError):
    """A workload did not start, did not stop, or misbehaved."""


class WorkloadSkip(ZdtmError):
    """A workload declared it cannot run here (SKIP verdict)."""


class ImageError(ZdtmError):
    """An image file or directory is corrupt or not what was expected."""


class StageTimeout(ZdtmError):
    """An external step exceeded its timeout."""


class PageServerError(ZdtmError):
    """A page-server session failed: names the peer, the command and what was expected."""
