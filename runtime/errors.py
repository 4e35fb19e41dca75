"""The runtime's exception: one class for everything the user can fix.

A missing or malformed model file, an unavailable runtime feature, a prompt longer than the context:
each is raised as `OuroRuntimeError` carrying one sentence that says what is wrong and what to do, so
the CLI prints it and exits non-zero without a traceback.
"""

from __future__ import annotations


class OuroRuntimeError(Exception):
    """The runtime cannot do what was asked; the message says why in one line."""
