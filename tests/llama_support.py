"""Helpers for tests that drive llama_cpp.Llama directly."""

from __future__ import annotations

import numpy as np


def greedy_run(llm, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
    """Prefill, then `steps` single-token greedy decodes; all tokens and every position's logits."""
    llm.eval(prompt)
    tokens = list(prompt)
    for _ in range(steps):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(token)
        llm.eval([token])
    return tokens, np.array(llm.scores[: llm.n_tokens])
