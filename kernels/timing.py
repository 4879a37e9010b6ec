"""CUDA-event timing shared by the kernel tuner and the benchmark: warm-up, then the median of many runs, with the
L2 cache optionally flushed before each timed run (so weights come from HBM, as they do in decode)."""

from __future__ import annotations

import statistics
from typing import Callable

import torch

L2_FLUSH_BYTES = 256 * 2**20  # several times any GPU's L2 (H100: 50 MB)


def l2_flush_buffer(device) -> torch.Tensor:
    return torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)


def _timed_ms(fn: Callable[[], object], flush: torch.Tensor | None) -> float:
    """One CUDA-event-timed fn(), `flush` overwritten first, outside the timed region."""
    if flush is not None:
        flush.zero_()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def cuda_time_ms(fn: Callable[[], object], warmup: int = 10, iters: int = 50,
                 flush: torch.Tensor | None = None) -> tuple[float, float, float]:
    """(median, min, max) ms of fn() over `iters` CUDA-event-timed runs after `warmup` runs; `flush` (if given)
    is overwritten before each timed run, outside the timed region."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = [_timed_ms(fn, flush) for _ in range(iters)]
    return statistics.median(times), min(times), max(times)


def graph_time_ms(fn: Callable[[], object], warmup: int = 3, iters: int = 30,
                  flush: torch.Tensor | None = None) -> tuple[float, float, float, str]:
    """(median, min, max, timer) ms of one fn() replayed from a CUDA graph: device time without the host's launch
    overhead (Python + Triton's launcher cost tens of microseconds, more than a whole decode GEMM on small
    shapes), which is how serving engines run decode. An op that cannot be captured (a host sync, say) is timed
    eagerly instead and timer says "eager"."""
    return interleaved_time_ms([fn], warmup, iters, flush)[0]


def interleaved_time_ms(fns: list[Callable[[], object]], warmup: int = 3, iters: int = 30,
                        flush: torch.Tensor | None = None) -> list[tuple[float, float, float, str]]:
    """`graph_time_ms` for several ops whose times are compared: each op is captured in a CUDA graph (eagerly timed
    if it cannot be), then every timed iteration replays all of them in turn, so a drift of the GPU's clock during
    the measurement (power and thermal limits under a heavy GEMM) falls on all of them alike. One
    (median, min, max, timer) per op."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compile, autotune and allocate outside the captures
        for fn in fns:
            for _ in range(warmup):
                fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    replays, timers = [], []
    for fn in fns:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                fn()
            graph.replay()
            torch.cuda.synchronize()
            replays.append(graph.replay)
            timers.append("cuda_graph")
        except Exception:  # not capturable: timed eagerly, in the same rotation
            torch.cuda.synchronize()
            replays.append(fn)
            timers.append("eager")
    for _ in range(2):  # untimed rounds after the captures
        for replay in replays:
            replay()
    torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for replay, ts in zip(replays, times):
            ts.append(_timed_ms(replay, flush))
    return [(statistics.median(ts), min(ts), max(ts), timer) for ts, timer in zip(times, timers)]
