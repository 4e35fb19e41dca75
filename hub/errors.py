"""The exception of the hub package."""

from __future__ import annotations

from convert.errors import ConvertError
from runtime.errors import OuroRuntimeError


class HubError(ConvertError, OuroRuntimeError):
    """A model reference cannot be resolved; the message says why in one line.

    Both a ConvertError and an OuroRuntimeError, so `ouro convert` and the commands that load a model
    report it as one `error:` line without any change to their error handling."""
