"""Fuzz worker: run the GGUF load path (validate_gguf, then llama_cpp.Llama) on many files in one process.

`python gguf_load_worker.py LIST FIRST [--raw]` reads one file path per line from the file LIST and runs
the cases from index FIRST on; --raw skips validate_gguf (to measure what it protects llama.cpp from). For each it prints `START <i>` before touching the file and one
result line after, flushing both, so the parent can tell which case killed the process if it dies from a
signal (an abort inside llama.cpp). Result lines: `RESULT <i> <kind> <detail>` with kind
  rejected   validate_gguf raised GGUFValidationError (the intended outcome for a broken file)
  loaded     validate_gguf passed and llama.cpp loaded the model and evaluated two tokens
  refused    validate_gguf passed but llama.cpp raised a Python exception (clean, but a gap to report)
  bug        validate_gguf raised something other than GGUFValidationError
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp  # noqa: E402

from runtime.validate import GGUFValidationError, validate_gguf  # noqa: E402


def run_case(path: str, raw: bool = False) -> tuple[str, str]:
    tokens = [0, 3]
    if not raw:
        try:
            summary = validate_gguf(path)
        except GGUFValidationError as e:
            return "rejected", str(e)
        except Exception as e:  # noqa: BLE001 - any other exception is exactly what the fuzzer hunts
            return "bug", f"{type(e).__name__}: {e}"
        tokens = [summary.bos_token_id or 0, min(3, summary.vocab - 1)]
    try:
        llm = llama_cpp.Llama(path, n_ctx=32, n_batch=32, n_threads=1, n_threads_batch=1, verbose=False)
        llm.eval(tokens)
        llm.close()
    except Exception as e:  # noqa: BLE001
        return "refused", f"{type(e).__name__}: {e}"
    return "loaded", ""


def main() -> None:
    paths = Path(sys.argv[1]).read_text().splitlines()
    raw = "--raw" in sys.argv[3:]
    for i in range(int(sys.argv[2]), len(paths)):
        print(f"START {i}", flush=True)
        kind, detail = run_case(paths[i], raw)
        print(f"RESULT {i} {kind} {' '.join(detail.split())[:300]}", flush=True)


if __name__ == "__main__":
    main()
