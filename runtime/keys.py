"""The ouro.* GGUF keys and their limits, for everyone who writes, checks or sets them.

The converter writes these keys, runtime.validate checks them, runtime.settings validates the run-time
values and runtime.control passes them to the patched llama.cpp. The C side (patches/0001, 0004) holds
the same limits (OURO_MAX_LOOPS, LLAMA_MAX_LAYERS) and the same order of exit modes; this module is
their only statement in Python. Importing it loads nothing else (the converter uses it without llama.cpp).
"""

from __future__ import annotations

ARCH = "ouro"

NUM_LOOPS = f"{ARCH}.num_loops"                       # loops T the file was trained with (absent: 1)
EXIT_GATE_WEIGHT = f"{ARCH}.exit_gate.weight"         # the gate as metadata: upstream rejects unknown tensors
EXIT_GATE_BIAS = f"{ARCH}.exit_gate.bias"
EARLY_EXIT_THRESHOLD = f"{ARCH}.early_exit_threshold"  # Q-exit threshold in [0, 1]; 1 reads the last loop
EXIT_AT_STEP = f"{ARCH}.exit_at_step"                 # a fixed exit loop instead of the gate
EXIT_MODE = f"{ARCH}.exit_mode"                       # one of EXIT_MODES (patch 0004)
MIN_LOOPS = f"{ARCH}.min_loops"                       # skip mode never exits before this many loops
KV_SHARE = f"{ARCH}.kv_share"                         # one KV slot per layer shared by every loop (patch 0003)
SKIP_LOOP_FINAL_NORM = f"{ARCH}.skip_loop_final_norm"

# In the C enum's order: the index is the value llama_ouro_set_exit takes.
EXIT_MODES = ("select", "skip")
KV_MODES = ("full", "share")
MAX_LOOPS = 16             # the patched runtime's OURO_MAX_LOOPS
MAX_LOGICAL_LAYERS = 512   # llama.cpp's LLAMA_MAX_LAYERS: loops x physical layers
