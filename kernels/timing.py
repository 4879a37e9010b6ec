"""CUDA-event timing shared by the kernel tuner and the benchmark: warm-up, then the median of many runs, with the
L2 cache optionally flushed before each timed run (so weights come from HBM, as they do in decode)."""

from __future__ import annotations

import statistics
from typing import Callable

import torch

L2_FLUSH_BYTES = 256 * 2**20  # several times any GPU's L2 (H100: 50 MB)


def l2_flush_buffer(device) -> torch.Tensor:
    return torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)


def cuda_time_ms(fn: Callable[[], object], warmup: int = 10, iters: int = 50,
                 flush: torch.Tensor | None = None) -> tuple[float, float, float]:
    """(median, min, max) ms of fn() over `iters` CUDA-event-timed runs after `warmup` runs; `flush` (if given)
    is overwritten before each timed run, outside the timed region."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if flush is not None:
            flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times), max(times)
