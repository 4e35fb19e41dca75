"""The patched runtime cross-built for aarch64 (toolchain.cross) gives the x86 runtime's tokens and logits.

ouro-greedy runs under qemu-aarch64 on tiny synthetic Ouro files (4 loops x 2 layers) in F32, F16 and Q8_0;
the reference is the same greedy decode through llama_cpp on this machine. The kernels differ (NEON with
fp16 vector arithmetic vs AVX2: the F16 KV cache's dot products accumulate in half precision on ARM), so
logits agree to rounding, not bit for bit, and the 8 logical layers of a random model amplify it: F32 and
F16 within a tolerance with identical tokens; Q8_0, where a small input difference flips the rounding of
quantized activations, is reported with a loose bound. The build is cached (scripts/bootstrap.sh makes
it); without the toolchain the tests skip.
"""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.cross import (
    TARGETS, CrossError, build_cross, compare, missing_tools, parse_greedy_output, run_greedy,
)

TARGET = TARGETS["aarch64-linux"]
MISSING = missing_tools(TARGET)
needs_toolchain = pytest.mark.skipif(
    bool(MISSING), reason=f"the aarch64 cross toolchain is not installed ({', '.join(MISSING)} not found): "
                          f"apt-get install {TARGET.packages} (scripts/bootstrap.sh installs it)")
PROMPT = [1, 5, 17, 42, 99, 3, 250, 7]
N_PREDICT = 8
# Largest |logit difference| allowed, as a fraction of the largest |logit| (measured on this model:
# f32 1.7e-3, f16 5.6e-3, q8_0 6.5e-2).
TOLERANCE = {"f32": 5e-3, "f16": 1.5e-2, "q8_0": 0.2}


@pytest.fixture(scope="module")
def arm_binary():
    return build_cross("aarch64-linux")


@needs_toolchain
@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0"])
def test_aarch64_greedy_tokens_and_logits_match_x86(arm_binary, tiny_gguf, qtype, record_property):
    pytest.importorskip("llama_cpp")
    _, gguf = tiny_gguf(qtype=qtype, seed=3)
    c = compare(gguf, PROMPT, N_PREDICT)
    record_property("max_rel_diff", c.max_rel_diff)
    print(f"{qtype}: tokens {c.target.tokens} (x86 {c.host.tokens}), max |diff| {c.max_abs_diff:.3g} "
          f"= {c.max_rel_diff:.3g} of the largest |logit| over {c.steps_compared} steps, "
          f"{c.target.seconds:.1f} s under qemu")
    assert c.target.logits.shape == (N_PREDICT + 1, 512)
    assert np.all(np.isfinite(c.target.logits))
    assert c.max_rel_diff <= TOLERANCE[qtype]
    assert c.target.tokens[0] == c.host.tokens[0]
    if qtype != "q8_0":
        assert c.tokens_equal, (c.target.tokens, c.host.tokens)


@pytest.fixture(scope="module")
def q8_kv_gguf(tmp_path_factory):
    """A tiny Ouro whose heads (32 values) a q8_0 KV block can hold: hidden 128, 4 heads, 2 layers x 4 loops."""
    import io

    from rich.console import Console

    from convert.convert import convert_checkpoint
    from models import synthetic

    root = tmp_path_factory.mktemp("phone")
    synthetic.PRESETS["cross-phone"] = dict(synthetic.PRESETS["tiny"], hidden_size=128, intermediate_size=256,
                                            head_dim=32)
    try:
        ckpt = synthetic.write_checkpoint(root / "ckpt", "cross-phone", seed=3)
    finally:
        del synthetic.PRESETS["cross-phone"]
    return convert_checkpoint(ckpt, root / "phone-f16.gguf", "f16", console=Console(file=io.StringIO()))


@needs_toolchain
def test_phone_settings_match_x86_on_aarch64(arm_binary, q8_kv_gguf):
    """Loop-shared KV, a q8_0 KV cache and flash attention (`ouro chat --phone`) on the ARM kernels."""
    pytest.importorskip("llama_cpp")
    c = compare(q8_kv_gguf, PROMPT, N_PREDICT, phone=True)
    print(f"phone: tokens {c.target.tokens} (x86 {c.host.tokens}), max |diff| {c.max_abs_diff:.3g} "
          f"= {c.max_rel_diff:.3g} of the largest |logit|")
    assert c.tokens_equal, (c.target.tokens, c.host.tokens)
    assert c.max_rel_diff <= 5e-2  # measured 1-2e-2: K/V rows quantized from slightly different values


@needs_toolchain
def test_a_bad_file_is_one_clear_error(arm_binary, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(CrossError, match="cannot load"):
        run_greedy(bad, [1, 2], 1, binary=arm_binary)


def test_output_parsing_refuses_garbage():
    tokens, logits = parse_greedy_output("step 0 token 1 logits 0.5 2.5 -1\nstep 1 token 0 logits 3 1 0\n")
    assert tokens == [1, 0] and logits.shape == (2, 3) and logits[0, 1] == np.float32(2.5)
    for text in ("", "step 1 token 1 logits 0 1\n", "step 0 token 1 logits 0 1\nstep 1 token 1 logits 0\n",
                 "hello\n"):
        with pytest.raises(CrossError):
            parse_greedy_output(text)


def test_a_missing_toolchain_is_named_with_the_packages_to_install(monkeypatch):
    monkeypatch.setattr("toolchain.cross.shutil.which", lambda tool: None)
    assert missing_tools(TARGET) == ["aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "cmake", "qemu-aarch64"]
    with pytest.raises(CrossError, match="apt-get install g\\+\\+-aarch64-linux-gnu qemu-user"):
        build_cross("aarch64-linux")
    with pytest.raises(CrossError, match="unknown target"):
        build_cross("riscv64-linux")
