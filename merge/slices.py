"""The merge's parallelism: each chunk's elementwise work split into slices, one per thread.

Why threads of our own rather than torch's intra-op threads: half of the per-chunk work
is numpy (comparisons, nonzero) or single-threaded in torch (``bincount``), and OpenMP
workers spin while they wait, which on a busy machine made two threads slower than one.
Here every slice runs its whole sequence of operations (torch and numpy release the GIL),
torch itself stays on one thread, and the results do not depend on the thread count:
slices are disjoint, histograms are integer sums, and everything else (delta norms,
the ordering of set-aside entries) is computed whole or in slice order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

MIN_SLICE = 1 << 16  # entries; below this a thread hand-off costs more than it saves
MAX_THREADS = 8  # beyond this the elementwise work is bound by memory bandwidth


def available_threads() -> int:
    """The cores this process may run on (its CPU affinity), at most `MAX_THREADS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


class Slices:
    """Run ``work(start, end)`` over ``threads`` contiguous slices of ``[0, n)``: the
    calling thread takes the first slice, a pool the others. Use as a context manager."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None

    def bounds(self, n: int) -> list[tuple[int, int]]:
        if n <= 0:
            return [(0, 0)]
        parts = max(1, min(self.threads, n // MIN_SLICE))
        step = -(-n // parts)
        step += -step % 64  # slices start on cache-line multiples of every dtype
        return [(a, min(a + step, n)) for a in range(0, n, step)]

    def run(self, work: Callable[[int, int], object], n: int) -> list:
        """``[work(a, c) for each slice]``, in slice order."""
        bounds = self.bounds(n)
        if len(bounds) == 1 or self._pool is None:
            return [work(a, c) for a, c in bounds]
        futures = [self._pool.submit(work, a, c) for a, c in bounds[1:]]
        first = work(*bounds[0])
        return [first] + [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> Slices:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
