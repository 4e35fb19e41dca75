"""Why the loop-shared KV cache costs this model accuracy: how far each loop's keys and values are from the
last loop's.

With `--kv share` the prompt keeps its K/V per loop, but a generated token keeps only its last loop's
(spec §4, the paper's "last-loop sharing"): loop t of every later token then attends to loop-T keys and
values where training always showed it loop-t ones. That is harmless exactly when loop t's K/V of a token
are close to its loop-T K/V. The PyTorch reference measures that directly on held-out conversations,
teacher-forced (prompt + expected answer), over the answer tokens: the tokens whose K/V sharing replaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.data import Problem, render_prompt


@dataclass(frozen=True)
class LoopDrift:
    """Loop t's K/V of the answer tokens against the last loop's, averaged over tokens, heads and layers."""

    loop: int
    key_cosine: float
    value_cosine: float
    key_distance: float  # ‖K_t − K_T‖ / ‖K_T‖
    value_distance: float


def _from(slot, start: int):
    """A cache slot's K or V [1, heads, S, d] from position `start` on, one row of all heads per token."""
    return slot[..., start:, :].transpose(1, 2).flatten(2)


def loop_drift(checkpoint: Path, problems: Sequence[Problem]) -> list[LoopDrift]:
    import torch
    from tokenizers import Tokenizer

    from runtime.reference import load_checkpoint

    model = load_checkpoint(checkpoint).eval()
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    T, L = model.config.total_ut_steps, model.config.num_hidden_layers
    sums = torch.zeros(T, 4, dtype=torch.float64)
    tokens = 0
    with torch.no_grad():
        for problem in problems:
            prompt = tokenizer.encode(render_prompt(problem.question)).ids
            answer = tokenizer.encode(problem.answer).ids
            cache = model(torch.tensor([prompt + answer])).cache
            start = len(prompt)
            for layer in range(L):
                last = (T - 1) * L + layer
                k_T, v_T = _from(cache.k[last], start), _from(cache.v[last], start)
                for t in range(T):
                    k, v = _from(cache.k[t * L + layer], start), _from(cache.v[t * L + layer], start)
                    sums[t, 0] += torch.cosine_similarity(k, k_T, dim=-1).sum()
                    sums[t, 1] += torch.cosine_similarity(v, v_T, dim=-1).sum()
                    sums[t, 2] += ((k - k_T).norm(dim=-1) / k_T.norm(dim=-1)).sum()
                    sums[t, 3] += ((v - v_T).norm(dim=-1) / v_T.norm(dim=-1)).sum()
            tokens += len(answer) * L
    means = (sums / tokens).tolist()
    return [LoopDrift(t + 1, *means[t]) for t in range(T)]
