"""Coarse-grained CPU parallelism shared by the network's cost volume and fusion.

A few hundred small PyTorch ops per band would each be an OpenMP fork/join across all
cores: fine on an idle machine, about 10x slower when another process competes for the
cores. Running whole bands in worker threads, each single-threaded, avoids that.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


def run_bands(fn: Callable[[int, int], None], bands: list[tuple[int, int]]) -> None:
    """Call ``fn(y0, y1)`` for every band, shared out to ``torch.get_num_threads()`` threads.

    Each worker thread runs PyTorch single-threaded (coarse-grained parallelism: no
    fork/join per op). ``torch.set_num_threads`` also sets MKL's process-wide thread count,
    so the caller's count is restored afterwards. Bands must touch disjoint memory. The
    workers run with the caller's grad / inference mode (thread-local state) and without
    autocast.
    """
    workers = min(torch.get_num_threads(), len(bands))
    if workers <= 1:
        for y0, y1 in bands:
            fn(y0, y1)
        return
    caller_threads = torch.get_num_threads()
    # Grad and inference modes are thread-local: carry the caller's over.
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def work(index: int) -> None:
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            for y0, y1 in bands[index::workers]:
                fn(y0, y1)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(work, i) for i in range(workers)]:
                future.result()
    finally:
        torch.set_num_threads(caller_threads)
