"""The machine's memory bandwidth, measured with a large numpy copy (the roofline for decode speed).

    python -m benchmarks.bandwidth [--mib 512] [--runs 7]

Decode is bound by reading the weights once per loop, so bandwidth / bytes-per-token is the ceiling it
is compared with (spec §7). A copy reads and writes every byte: GB/s counts both, as STREAM's "copy"
does. The array is far larger than any cache, and the figure is the median of several runs, each
copying the whole array, with 1 thread and with one thread per core on separate halves (numpy releases
the GIL inside the copy, so the threads run in parallel).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.kernel_ceiling import cpu_features


@dataclass
class Bandwidth:
    array_bytes: int
    threads: int
    runs_gbps: list[float]

    @property
    def gbps(self) -> float:
        return statistics.median(self.runs_gbps)


@dataclass
class Machine:
    """The suite's first stage: what every speed it measures ran on."""

    cpu: str
    cores: int
    python: str
    bandwidth: list[Bandwidth]  # with 1 thread and with one per core


def _parallel_copy(dst: np.ndarray, src: np.ndarray, threads: int) -> None:
    if threads == 1:
        np.copyto(dst, src)
        return
    bounds = np.linspace(0, src.size, threads + 1, dtype=np.int64)
    workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in zip(bounds, bounds[1:])]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def copy_bandwidth(array_bytes: int = 512 << 20, runs: int = 7, threads: int = 1) -> Bandwidth:
    """GB/s (1e9 bytes read + written per second) of copying `array_bytes` with `threads` threads."""
    if array_bytes < 8 or runs < 1 or threads < 1:
        raise ValueError("array_bytes >= 8, runs >= 1 and threads >= 1 are needed")
    src = np.ones(array_bytes // 8, dtype=np.float64)  # ones, not empty: every page is really mapped
    dst = np.zeros_like(src)
    _parallel_copy(dst, src, threads)  # warm-up: page faults and thread start-up are not bandwidth
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        _parallel_copy(dst, src, threads)
        results.append(2 * src.nbytes / (time.perf_counter() - start) / 1e9)
    return Bandwidth(array_bytes=src.nbytes, threads=threads, runs_gbps=results)


def machine(array_bytes: int = 512 << 20, runs: int = 7) -> Machine:
    counts = sorted({1, os.cpu_count() or 1})
    return Machine(cpu_features().name, os.cpu_count() or 1, platform.python_version(),
                   [copy_bandwidth(array_bytes, runs, n) for n in counts])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="array size in MiB")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    for b in machine(args.mib << 20, args.runs).bandwidth:
        print(f"{b.threads} thread(s): {b.gbps:.1f} GB/s (median of {len(b.runs_gbps)} copies of {b.array_bytes >> 20} MiB)")


if __name__ == "__main__":
    main()
