"""The chat template a GGUF carries, and whether the checkpoint is a Thinking model.

The converter cannot import models.tokenizer (it needs the `tokenizers` package, a dev-only dependency),
so the fallback ChatML template for checkpoints that ship none is written here.
"""

from __future__ import annotations

import jinja2

from convert.errors import TokenizerError

# The fallback when a checkpoint has no template: ChatML (spec §6). Thinking models need `<think>\n`
# after the assistant header because they never open the block themselves; `enable_thinking=false`
# turns that off, as in the published Thinking templates.
_CHATML_TURNS = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
)
_THINK_OPEN = (
    "{%- if not (enable_thinking is defined and enable_thinking is false) -%}"
    "{{- '<think>\\n' -}}"
    "{%- endif -%}"
)


def chatml_template(thinking: bool) -> str:
    return _CHATML_TURNS + (_THINK_OPEN if thinking else "") + "{%- endif -%}"


def is_thinking(model_name: str, template: str | None) -> bool:
    """A Thinking checkpoint, judged from what the checkpoint itself says.

    The template is the primary signal: a Thinking template must open `<think>` for the model (it never
    does so itself), so it mentions `enable_thinking` or `<think>`; a base/instruct ChatML template
    mentions neither. The name suffix `-Thinking` (ByteDance's naming) covers a Thinking checkpoint
    whose template was lost; a renamed directory with a Thinking template is still detected.
    """
    if template is not None and ("enable_thinking" in template or "<think>" in template):
        return True
    return model_name.lower().endswith("-thinking")


def check_template(template: str, source: str) -> None:
    """Fail early on a template llama.cpp's Jinja engine would reject at chat time."""
    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as e:
        raise TokenizerError(f"{source}: the chat template is not valid Jinja (line {e.lineno}: {e.message})") from None
