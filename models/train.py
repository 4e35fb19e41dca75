"""Train the embedded Ouro model: `python -m models.train [OUTDIR]`.

The model is runtime.reference.Ouro itself at small dimensions. Training follows the Ouro paper:

- stage 1, everything but the gate: every loop is trained to answer, deeper loops weighted more,
  L = Σ_t w_t · CE_t with w_t ∝ t. (The paper's objective weights each loop by the gate's exit
  probability plus an entropy bonus; with a gate that starts undecided that gives the last loop 1/8 of
  the gradient, and at this budget the hard tasks, which only the deep loops can solve, then barely
  learn: 11% held-out accuracy after 600 steps, the same at every loop.)
- stage 2, the exit gate alone: for each token and loop t, the gate is taught "continue" when loop
  t + 1 lowers that token's loss by more than a margin and "exit" otherwise (the paper's adaptive exit
  training, with the same soft target σ(k · (improvement − margin))).

Losses count only the assistant's answer tokens (and its closing <|im_end|>). Everything is seeded and
runs a fixed number of steps on a fixed number of threads, so the same command gives the same weights.
Progress: a rich progress bar on a terminal, plus a line with teacher-forced held-out accuracy per loop
every `eval_every` steps (the only output when logging to a file).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import save_file
from tokenizers import Tokenizer

from models.data import TRAIN_SEED, Problem, held_out_problems, render_prompt, training_stream
from models.tokenizer import IM_END, build_tokenizer, write_json, write_tokenizer_files
from runtime.reference import Ouro, OuroConfig

MODEL_NAME = "ouro-tiny-arith"
DEFAULT_OUTDIR = Path(__file__).resolve().parent / MODEL_NAME
PAD_ID = 0  # <|endoftext|>; padded positions are never in the loss

console = Console(width=200)


@dataclass
class Recipe:
    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 256
    intermediate_size: int = 1024
    # One physical layer: a single loop is then one layer deep, too shallow for carries and chains, so
    # what the loops add is plain to see (and each training step is half the cost of two layers).
    num_hidden_layers: int = 1
    num_attention_heads: int = 8
    loops: int = 4
    batch_size: int = 64
    stage1_steps: int = 6600
    stage2_steps: int = 300
    lr: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 0.1
    gate_bias_init: float = 0.0
    branch_scale_init: float = 0.1
    gate_lr: float = 1e-2
    gate_margin: float = 0.005  # γ of stage 2: an improvement below this is not worth a loop
    gate_sharpness: float = 50.0  # k of stage 2
    tokenizer_corpus: int = 20000  # conversations the BPE is learned from
    dtype: str = "bf16"
    # Both cores: at width 256 a step is compute-bound (measured 0.96 s on one thread, 0.71 s on two).
    threads: int = 2
    eval_every: int = 200

    def model_config(self) -> dict:
        """The HF config.json of the trained model, shaped like the published Ouro configs."""
        head_dim = self.hidden_size // self.num_attention_heads
        return {
            "architectures": ["OuroForCausalLM"],
            "model_type": "ouro",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_attention_heads,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 2048,
            "total_ut_steps": self.loops,
            "early_exit_threshold": 1.0,
            "tie_word_embeddings": False,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "use_cache": True,
            "torch_dtype": {"bf16": "bfloat16", "f32": "float32"}[self.dtype],
        }


def encode(tokenizer: Tokenizer, turns: list[Problem]) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation, and the 0/1 mask of the tokens the loss scores: every
    assistant reply and its <|im_end|>. Each turn's prompt is rendered with the conversation before it,
    exactly as a chat client renders it, so the ids are the ones `ouro chat` sends."""
    im_end = tokenizer.token_to_id(IM_END)
    ids: list[int] = []
    mask: list[int] = []
    for i, turn in enumerate(turns):
        prompt = tokenizer.encode(render_prompt(turn.question, turns[:i])).ids
        assert prompt[:len(ids)] == ids, "a rendered conversation must extend the one before it"
        answer = tokenizer.encode(turn.answer).ids + [im_end]
        mask += [0] * (len(prompt) - len(ids)) + [1] * len(answer)
        ids = prompt + answer
    return ids, mask


def collate(pairs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, targets, loss mask), shifted for next-token prediction."""
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.bool)
    for i, (seq, m) in enumerate(pairs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def batches(tokenizer: Tokenizer, stream, batch_size: int, seed: int):
    """Batches of similar lengths (less padding): sort a pool of 16 batches by length, shuffle the batches."""
    rng = random.Random(seed)
    while True:
        pool = sorted((encode(tokenizer, next(stream)) for _ in range(16 * batch_size)), key=lambda e: len(e[0]))
        chunks = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield collate(chunk)


def per_loop_ce(model: Ouro, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor):
    """(CE [T, N] of every scored token at every loop, gate logits [T, N], argmax-correct [T, N])."""
    out = model(inputs)
    hidden = out.hidden[:, mask]  # [T, N, D]: only the scored positions reach the vocabulary
    logits = model.logits(hidden)
    T, N, V = logits.shape
    tgt = targets[mask]
    ce = F.cross_entropy(logits.reshape(T * N, V), tgt.repeat(T), reduction="none").view(T, N)
    correct = logits.argmax(-1) == tgt
    return ce, out.gate_logits[:, mask], correct


def stage1_loss(ce: torch.Tensor) -> torch.Tensor:
    """Σ_t w_t · CE_t with w_t ∝ t (loop 1 has the least weight), averaged over tokens."""
    weights = torch.arange(1, ce.shape[0] + 1, dtype=ce.dtype)
    return ((weights / weights.sum())[:, None] * ce).sum(0).mean()


def stage2_loss(ce: torch.Tensor, gate_logits: torch.Tensor, margin: float, sharpness: float) -> torch.Tensor:
    """BCE of each loop's exit probability λ_t against "continue iff loop t+1 helps" (t < T−1)."""
    improvement = (ce[:-1] - ce[1:]).clamp_min(0)
    continue_target = torch.sigmoid(sharpness * (improvement - margin))
    return F.binary_cross_entropy_with_logits(gate_logits[:-1], 1 - continue_target)


def sequence_accuracy(correct: torch.Tensor, mask: torch.Tensor, per_sequence: bool = False) -> torch.Tensor:
    """Per loop, the share of sequences whose every scored token is the argmax: greedy exact match."""
    T = correct.shape[0]
    rows = mask.nonzero()[:, 0]  # the sequence of each scored token
    wrong = torch.zeros(T, mask.shape[0])
    wrong.index_add_(1, rows, (~correct).float())
    return (wrong == 0) if per_sequence else (wrong == 0).float().mean(1)


def init_weights(model: Ouro, gate_bias: float, branch_scale: float) -> None:
    """GPT-style small normal init; the gate starts constant at sigmoid(gate_bias).

    The sandwich norms on the attention and MLP *outputs* start at `branch_scale` instead of 1: at 1
    every layer adds two unit-RMS vectors to a unit-RMS state, so each loop scrambles the previous
    one and deeper loops start out worse than shallow ones. Small, every loop starts close to the
    identity and more loops can only start by helping.
    """
    for p in model.parameters():
        if p.dim() >= 2:
            torch.nn.init.normal_(p, std=0.02)
    for layer in model.model.layers:
        torch.nn.init.constant_(layer.input_layernorm_2.weight, branch_scale)
        torch.nn.init.constant_(layer.post_attention_layernorm_2.weight, branch_scale)
    torch.nn.init.zeros_(model.model.early_exit_gate.weight)
    torch.nn.init.constant_(model.model.early_exit_gate.bias, gate_bias)


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at the end of stage 1."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.stage1_steps - recipe.warmup_steps)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def tokenizer_texts(recipe: Recipe) -> list[str]:
    """Whole rendered conversations from their own stream, for learning the BPE merges."""
    stream = training_stream(TRAIN_SEED + recipe.seed + 1)
    texts = []
    for _ in range(recipe.tokenizer_corpus):
        turns = next(stream)
        texts.append(render_prompt(turns[-1].question, turns[:-1]) + turns[-1].answer + IM_END + "\n")
    return texts


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)


def held_out_batch(tokenizer: Tokenizer, n: int):
    """The first n held-out problems as one batch, with each one's task (the progress probe)."""
    problems = held_out_problems(n)
    return collate([encode(tokenizer, [p]) for p in problems]), [p.task for p in problems]


@torch.no_grad()
def quick_eval(model: Ouro, probe) -> tuple[list[float], str]:
    """Teacher-forced exact match per loop, overall and per task: the same verdict greedy decoding
    would give (every answer token is the argmax given a correct prefix), at one batched forward."""
    batch, tasks = probe
    model.eval()
    _, _, correct = per_loop_ce(model, *batch)
    acc = sequence_accuracy(correct, batch[2], per_sequence=True)
    model.train()
    parts = []
    for name in sorted(set(tasks)):
        idx = torch.tensor([i for i, t in enumerate(tasks) if t == name])
        parts.append(name + " " + "/".join(f"{a:.2f}" for a in acc[:, idx].float().mean(1).tolist()))
    per_loop = [round(a, 4) for a in acc.float().mean(1).tolist()]
    return per_loop, "acc/loop " + "/".join(f"{a:.2f}" for a in per_loop) + " | " + " ".join(parts)


def train(recipe: Recipe) -> tuple[Ouro, Tokenizer, dict]:
    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    tokenizer = build_tokenizer(tokenizer_texts(recipe), recipe.vocab_size)
    model = Ouro(OuroConfig.from_dict(recipe.model_config()))
    init_weights(model, recipe.gate_bias_init, recipe.branch_scale_init)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"{MODEL_NAME}: {n_params / 1e6:.2f}M parameters, recipe {asdict(recipe)}")

    stream = batches(tokenizer, training_stream(TRAIN_SEED + recipe.seed), recipe.batch_size, recipe.seed)
    probe = held_out_batch(tokenizer, 250)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98))
    start = time.time()
    with progress_bar() as bar:
        task = bar.add_task("stage 1", total=recipe.stage1_steps, info="")
        running = None
        curve: list[dict] = []  # the training curve the model card plots
        for step in range(recipe.stage1_steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, recipe)
            ce, _, _ = per_loop_ce(model, *next(stream))
            loss = stage1_loss(ce)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            per_loop = ce.detach().mean(1)
            running = per_loop if running is None else 0.98 * running + 0.02 * per_loop
            info = "CE/loop " + " ".join(f"{c:.3f}" for c in running.tolist())
            if (step + 1) % recipe.eval_every == 0 or step + 1 == recipe.stage1_steps:
                accuracy, info_eval = quick_eval(model, probe)
                curve.append({"step": step + 1, "seconds": round(time.time() - start),
                              "ce": [round(c, 4) for c in running.tolist()], "accuracy": accuracy})
                console.print(f"step {step + 1} {time.time() - start:.0f}s {info} {info_eval}")
            bar.update(task, advance=1, info=info)

        for p in model.parameters():
            p.requires_grad_(False)
        gate = model.model.early_exit_gate
        for p in gate.parameters():
            p.requires_grad_(True)
        gate_opt = torch.optim.Adam(gate.parameters(), lr=recipe.gate_lr)
        task = bar.add_task("stage 2 (gate)", total=recipe.stage2_steps, info="")
        for step in range(recipe.stage2_steps):
            ce, gates, _ = per_loop_ce(model, *next(stream))  # only the gate requires grad now
            loss = stage2_loss(ce.detach(), gates, recipe.gate_margin, recipe.gate_sharpness)
            gate_opt.zero_grad(set_to_none=True)
            loss.backward()
            gate_opt.step()
            bar.update(task, advance=1, info=f"gate BCE {loss.item():.4f}")
    wall = time.time() - start
    _, final = quick_eval(model, probe)
    console.print(f"trained in {wall:.0f}s; {final}")
    return model.eval(), tokenizer, {"wall_seconds": wall, "parameters": n_params, "teacher_forced_probe": final,
                                     "curve": curve}


def write_checkpoint(model: Ouro, tokenizer: Tokenizer, recipe: Recipe, stats: dict, outdir: Path) -> None:
    """HF layout (config.json, model.safetensors, tokenizer files, generation_config.json) + training.json."""
    outdir.mkdir(parents=True, exist_ok=True)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[recipe.dtype]
    # Norm weights and the gate are 1-D and small; the published checkpoints keep every tensor in BF16.
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=outdir, prefix=".model.", suffix=".tmp")
    os.close(fd)
    save_file(state, tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; it is a published file
    os.replace(tmp, outdir / "model.safetensors")
    write_json(outdir / "config.json", recipe.model_config())
    # A chat turn ends with <|im_end|> (2); 0 stays a stop id like in the published configs.
    write_json(outdir / "generation_config.json",
               {"bos_token_id": 0, "eos_token_id": [2, 0], "pad_token_id": 0, "do_sample": False})
    write_json(outdir / "training.json", {"recipe": asdict(recipe), **stats})
    write_tokenizer_files(tokenizer, outdir, thinking=False)


def main(outdir: Path = typer.Argument(DEFAULT_OUTDIR, help="checkpoint directory to write"),
         stage1_steps: int = typer.Option(Recipe.stage1_steps), stage2_steps: int = typer.Option(Recipe.stage2_steps),
         seed: int = typer.Option(Recipe.seed)) -> None:
    recipe = Recipe(seed=seed, stage1_steps=stage1_steps, stage2_steps=stage2_steps)
    model, tokenizer, stats = train(recipe)
    write_checkpoint(model, tokenizer, recipe, stats, outdir)
    console.print(f"wrote {outdir}")


if __name__ == "__main__":
    typer.run(main)
