"""Every GGUF key/value an Ouro file carries (team contract "GGUF conventions", spec §5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_VERSION, GGUFWriter, LlamaFileType

from convert.chat_template import chatml_template, is_thinking
from convert.checkpoint import Checkpoint
from convert.errors import CheckpointError
from convert.safetensors_reader import to_float32
from convert.tensor_map import GATE_BIAS, GATE_WEIGHT
from convert.tokenizer import GGUFVocab
from runtime import keys


# Paper sampling for the reasoning (Thinking) models; base models are run greedy and get no defaults.
THINKING_TEMP = 1.0
THINKING_TOP_P = 0.7


@dataclass(frozen=True)
class ExitGate:
    weight: np.ndarray  # float32 [hidden]
    bias: float


@dataclass(frozen=True)
class FileMetadata:
    """What the writer puts into the KV section, resolved from the checkpoint."""

    name: str
    file_type: LlamaFileType
    thinking: bool
    chat_template: str
    template_from_checkpoint: bool
    gate: ExitGate


def read_exit_gate(ckpt: Checkpoint) -> ExitGate:
    w = ckpt.weights.entries[GATE_WEIGHT]
    b = ckpt.weights.entries[GATE_BIAS]
    weight = to_float32(ckpt.weights.mmap(GATE_WEIGHT), w.dtype).reshape(-1).copy()
    bias = to_float32(ckpt.weights.mmap(GATE_BIAS), b.dtype).reshape(-1)
    if not (np.all(np.isfinite(weight)) and np.isfinite(bias[0])):
        raise CheckpointError(f"{ckpt.weights.path}: the exit gate holds non-finite values")
    return ExitGate(weight=weight, bias=float(bias[0]))


def resolve_metadata(ckpt: Checkpoint, vocab: GGUFVocab, file_type: LlamaFileType) -> FileMetadata:
    thinking = is_thinking(ckpt.name, vocab.chat_template)
    return FileMetadata(
        name=ckpt.name,
        file_type=file_type,
        thinking=thinking,
        chat_template=vocab.chat_template or chatml_template(thinking),
        template_from_checkpoint=vocab.chat_template is not None,
        gate=read_exit_gate(ckpt),
    )


def add_metadata(writer: GGUFWriter, ckpt: Checkpoint, vocab: GGUFVocab, meta: FileMetadata) -> None:
    hp = ckpt.hparams
    writer.add_name(meta.name)
    writer.add_file_type(int(meta.file_type))
    writer.add_quantization_version(GGML_QUANT_VERSION)
    if meta.thinking:
        writer.add_sampling_temp(THINKING_TEMP)
        writer.add_sampling_top_p(THINKING_TOP_P)

    writer.add_context_length(hp.max_position_embeddings)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_feed_forward_length(hp.intermediate_size)
    writer.add_block_count(hp.num_hidden_layers)  # physical layers; the loops are num_loops
    writer.add_head_count(hp.num_attention_heads)
    writer.add_head_count_kv(hp.num_key_value_heads)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    writer.add_vocab_size(hp.vocab_size)
    writer.add_uint32(keys.NUM_LOOPS, hp.total_ut_steps)
    # Ouro applies model.norm after every loop, including the last one (spec §3).
    writer.add_bool(keys.SKIP_LOOP_FINAL_NORM, False)

    # The gate as metadata: upstream llama.cpp ignores unknown keys but rejects unknown tensors.
    writer.add_array(keys.EXIT_GATE_WEIGHT, [float(x) for x in meta.gate.weight])
    writer.add_float32(keys.EXIT_GATE_BIAS, meta.gate.bias)
    writer.add_float32(keys.EARLY_EXIT_THRESHOLD, hp.early_exit_threshold)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_eot_token_id(vocab.eos_id)
    writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(meta.chat_template)
