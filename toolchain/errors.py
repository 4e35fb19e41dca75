"""The build's exceptions: each carries one sentence saying what failed and what to do.

They subclass
OuroRuntimeError so that every `ouro` command prints them the same way, without a traceback.
"""

from __future__ import annotations

from runtime.errors import OuroRuntimeError

class BuildError(OuroRuntimeError):
    """The runtime cannot be built or used; the message says why and what to do."""


class SdistError(BuildError):
    """The llama-cpp-python source distribution could not be fetched or is not the pinned one."""


class PatchError(BuildError):
    """A file in patches/ does not apply to the vendored llama.cpp."""


class CompileError(BuildError):
    """A build step failed; the full output is in the log file named in the message."""


class RuntimeNotReady(BuildError):
    """llama_cpp is missing, not ours, or built from other patches than the current ones."""
