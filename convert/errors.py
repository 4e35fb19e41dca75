"""The converter's exceptions.

Every problem with the user's input or environment is raised as a `ConvertError` (or a subclass) carrying
one human-readable sentence; the CLI prints that sentence and exits non-zero, so no traceback ever reaches
the user for a bad input. Anything else escaping the converter is a bug in the converter.
"""

from __future__ import annotations


class ConvertError(Exception):
    """A conversion cannot proceed; the message says why in one line."""


class CheckpointError(ConvertError):
    """The source checkpoint is missing, incomplete or not an Ouro checkpoint."""


class SafetensorsError(ConvertError):
    """The safetensors file is truncated, corrupt or holds a dtype we cannot convert."""


class TokenizerError(ConvertError):
    """The tokenizer files are missing, malformed or not SmolLM's byte-level BPE."""


class OutputError(ConvertError):
    """The output path cannot be written (exists without --force, unwritable directory, ...)."""


class RuntimeMissingError(ConvertError):
    """A K-quant was requested but the patched llama.cpp runtime is not available."""
