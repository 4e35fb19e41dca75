"""Moves LeakSanitizer's check from the C exit to the start of Python's shutdown (scripts/sanitize.sh).

scripts/sanitize.sh puts this directory on PYTHONPATH, so every Python process of the run imports it: pytest
and the children it starts (the fuzz workers), which inherit the environment. LeakSanitizer (part of the
preloaded ASan runtime) normally checks at the C exit, after CPython's finalization has torn the interpreter
half down and left thousands of objects no longer referenced from anywhere: reports about CPython, not about
llama.cpp. This atexit handler is registered first, so it runs last among Python's own (after whatever
cleanup the others do), while every live object is still referenced from the interpreter's state; with
PYTHONMALLOC=malloc those objects are ASan heap blocks that LeakSanitizer scans, so memory still held by
Python counts as reachable and what is reported is memory nothing points to: a real leak. (Not so for a
model or context still open: llama-cpp-python keeps their pointers as Python ints, which LeakSanitizer cannot
read; README, "Sanitizers".) The first check disables the one at the C exit.
"""

import atexit
import ctypes

# Absent when the sanitizer runtime is not preloaded (a child started with a cleaned environment).
_check = getattr(ctypes.CDLL(None), "__lsan_do_leak_check", None)
if _check is not None:
    atexit.register(_check)
