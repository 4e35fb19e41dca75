"""The GGUF's chat template: rendered in a Jinja sandbox (templates come with files from strangers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime.errors import OuroRuntimeError

# Thinking templates open the block after the assistant header; the model writes the rest and "</think>".
THINK_OPEN = "<think>\n"
Message = Mapping[str, str]


def _raise_template_error(message: str) -> None:
    raise OuroRuntimeError(f"the chat template refused these messages: {message}")


class ChatTemplate:
    def __init__(self, source: str | None, path: Path, bos_token: str, eos_token: str) -> None:
        self.source = source
        self.path = path
        self.bos_token, self.eos_token = bos_token, eos_token
        self.thinking = bool(source) and ("enable_thinking" in source or "<think>" in source)
        self._compiled: jinja2.Template | None = None  # compiled on first use

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
               enable_thinking: bool | None = None) -> str:
        """The prompt text the template makes of `messages`."""
        if not self.source:
            raise OuroRuntimeError(f"{self.path} has no chat template (tokenizer.chat_template): use generate()")
        if self._compiled is None:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise_template_error
            try:
                self._compiled = env.from_string(self.source)
            except jinja2.TemplateError as e:
                raise OuroRuntimeError(f"{self.path}: the chat template is not valid Jinja ({e})") from None
        variables: dict[str, Any] = dict(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        if enable_thinking is not None:
            variables["enable_thinking"] = enable_thinking
        try:
            return self._compiled.render(**variables)
        except jinja2.TemplateError as e:
            raise OuroRuntimeError(f"the chat template failed on these messages: {e}") from None
