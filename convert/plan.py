"""The output types `ouro convert` offers, and the per-tensor layout of the file it will write.

Everything about the output file is decided here, before a byte is written: the GGML type of every
tensor, its size, and its row permutation. The header can then be written first and the data streamed
tensor by tensor.

Type choices (why):
- Norms and other 1-D tensors stay F32: they are tiny and llama.cpp expects them in F32.
- f16/bf16/q8_0: every 2-D matrix, the token embedding and the output head included, in that type.
- q4_0: every 2-D matrix in Q4_0 except the output head, kept in Q8_0. The head is the most
  quantization-sensitive matrix (llama.cpp's own Q4 recipes keep it at 6 bits or more) and Q8_0 is the
  closest type the Python quantizer can write; it costs ~50 MB on the 1.4B.
- A block-quantized matrix whose row length is not a multiple of the block size (32) cannot be stored
  in that type; it falls back to F16 and the summary lists it.
- K-quants (q4_k_m/q5_k_m/q6_k) are written as an F16 file first and quantized by llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, LlamaFileType

from convert.errors import ConvertError
from convert.tensor_map import TensorSpec, rope_row_permutation


@dataclass(frozen=True)
class OutputType:
    name: str
    file_type: LlamaFileType
    matrix: Q  # type of 2-D matrices written by Python (F16 for K-quants: llama.cpp quantizes later)
    head: Q  # type of output.weight
    kquant: bool = False


OUTPUT_TYPES: dict[str, OutputType] = {
    t.name: t
    for t in (
        OutputType("f32", LlamaFileType.ALL_F32, Q.F32, Q.F32),
        OutputType("f16", LlamaFileType.MOSTLY_F16, Q.F16, Q.F16),
        OutputType("bf16", LlamaFileType.MOSTLY_BF16, Q.BF16, Q.BF16),
        OutputType("q8_0", LlamaFileType.MOSTLY_Q8_0, Q.Q8_0, Q.Q8_0),
        OutputType("q4_0", LlamaFileType.MOSTLY_Q4_0, Q.Q4_0, Q.Q8_0),
        OutputType("q4_k_m", LlamaFileType.MOSTLY_Q4_K_M, Q.F16, Q.F16, kquant=True),
        OutputType("q5_k_m", LlamaFileType.MOSTLY_Q5_K_M, Q.F16, Q.F16, kquant=True),
        OutputType("q6_k", LlamaFileType.MOSTLY_Q6_K, Q.F16, Q.F16, kquant=True),
    )
}


def output_type(name: str) -> OutputType:
    try:
        return OUTPUT_TYPES[name.lower()]
    except KeyError:
        raise ConvertError(f"unknown type {name!r}; choose one of {', '.join(OUTPUT_TYPES)}") from None


@dataclass(frozen=True)
class TensorPlan:
    src: TensorSpec
    ggml_type: Q
    nbytes: int  # bytes of this tensor's data in the file (before alignment padding)
    fallback: str | None = None  # why the tensor is not in the requested type

    @property
    def name(self) -> str:
        assert self.src.gguf_name is not None
        return self.src.gguf_name

    @property
    def row_perm(self) -> np.ndarray | None:
        if not self.src.rope_heads:
            return None
        return rope_row_permutation(self.src.shape[0], self.src.rope_heads)


def tensor_nbytes(shape: tuple[int, ...], ggml_type: Q) -> int:
    block, type_size = GGML_QUANT_SIZES[ggml_type]
    return prod(shape[:-1]) * (shape[-1] // block) * type_size


def plan_tensors(specs: list[TensorSpec], otype: OutputType) -> list[TensorPlan]:
    """The GGUF tensors (the gate travels as metadata), each with its type and byte size."""
    plans = []
    for spec in specs:
        if spec.gguf_name is None:
            continue
        fallback = None
        if len(spec.shape) == 1:
            ggml_type = Q.F32
        else:
            ggml_type = otype.head if spec.gguf_name == "output.weight" else otype.matrix
            block = GGML_QUANT_SIZES[ggml_type][0]
            if spec.shape[-1] % block:
                fallback = (f"row length {spec.shape[-1]} is not a multiple of the {ggml_type.name} block "
                            f"size {block}: written as F16")
                ggml_type = Q.F16
        plans.append(TensorPlan(spec, ggml_type, tensor_nbytes(spec.shape, ggml_type), fallback))
    return plans
