#!/usr/bin/env bash
# The patched llama.cpp under AddressSanitizer + UndefinedBehaviorSanitizer (issue 20):
#   scripts/sanitize.sh [pytest arguments]
# builds the sanitized libllama/ggml (`ouro runtime build --sanitize`, cached by its own key, never installed)
# and runs the tests that drive our C++ paths against them, stopping at the first report, with leak checking
# on. Without arguments: the runtime parity, exit-control, statistics, kernel and patched-path tests, the GGUF
# fuzz run (1,148 mutated files through the load path) and the check that a deliberate leak is reported.
# Fails if any process left a report. PYTHON picks the interpreter (default .venv/bin/python); REPORTS the
# report directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"

LIB="$("$PY" -m ouro_cli runtime build --sanitize)"
TESTS=(tests/test_runtime_parity.py tests/test_exit_control.py tests/test_cpu_kernels.py
       tests/test_patched_paths.py tests/test_fuzz_gguf.py tests/test_leak_check.py)
# Arguments starting with a path replace the default set; options alone (-x, -k ...) are added to it.
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then TESTS=("$@"); else TESTS+=("$@"); fi

# Python is not instrumented, so the sanitizer runtimes must be loaded before anything else: preloaded.
# halt_on_error/abort_on_error: the first report kills the process (pytest or a fuzz worker), so nothing passes
# with a report in its log. allocator_may_return_null: a fuzzed file asking for an absurd buffer gets the
# normal build's std::bad_alloc (which the loader turns into an error) instead of an ASan abort.
# Leak checking: LeakSanitizer would check at the C exit, after CPython's finalization has dropped thousands
# of objects, and a suppression matches any frame of a stack, so silencing those by libpython would also
# silence llama.cpp's leaks, which are called from it. Instead scripts/lsan/sitecustomize.py (on PYTHONPATH,
# so imported by every Python process of the run, fuzz workers included) runs the check at the start of
# Python's shutdown, and PYTHONMALLOC=malloc puts Python's objects on the ASan heap, where LeakSanitizer scans
# them for pointers: memory Python still holds is reachable, a leak is memory nothing points to. The few
# leaks left in CPython and third-party wheels, and upstream llama.cpp's, are suppressed by the function that
# allocated them in scripts/lsan/suppressions.txt.
# llama-cpp-python sends stderr to /dev/null while a model loads quietly (verbose=False), which would swallow a
# report: reports go to files, one per process, in REPORTS (emptied first; default next to the library).
# A leak found as a fuzz worker exits kills no test, so the run fails on any file there, not on pytest alone.
LSAN="$ROOT/scripts/lsan"
REPORTS="${REPORTS:-$(dirname "$LIB")/reports}"
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
echo "sanitizer reports, if any: $REPORTS" >&2
PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
status=0
env LLAMA_CPP_LIB_PATH="$LIB" LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    LD_PRELOAD="$PRELOAD" PYTHONMALLOC=malloc PYTHONPATH="$LSAN${PYTHONPATH:+:$PYTHONPATH}" \
    ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:detect_leaks=1:log_path=$REPORTS/asan" \
    LSAN_OPTIONS="suppressions=$LSAN/suppressions.txt:print_suppressions=0" \
    UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$REPORTS/ubsan" \
    "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" || status=$?
if [ -n "$(ls -A "$REPORTS")" ]; then
    grep -H "SUMMARY:" "$REPORTS"/* >&2
    exit 1
fi
exit "$status"
