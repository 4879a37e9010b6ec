"""Where a decode step's time goes (`bench.throughput.profile_steps`): the step run under torch.profiler, its GPU
kernels (CUDA) or its ops' own CPU time (CPU) grouped by name into GEMM/GEMV, attention and the rest, per step.
This answers why a method's speedup is what it is: a quantized method shrinks only the GEMM share, while
attention, norms and launches stay (results/h100/decode_profile_20261127_calls17-18.log is an example).

On CUDA the step runs outside its CUDA graph (the profiler then sees each kernel, and a graph replays the same
kernels); the times are kernel durations, without launch gaps."""

from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

# Lower-case substrings of kernel (CUDA) or op (CPU) names, by category; the first match wins. Inductor's fused
# kernels (triton_poi_/triton_red_/triton_per_) are "other" whatever ops their names list (a fused RMSNorm is
# named after the matmul it feeds).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "attention": ("attention", "attn", "sdpa", "flash", "fmha", "softmax"),
    "gemm": ("w4a16", "gemv", "fp8_linear", "fp8_gemm", "scaled_mm", "gemm", "nvjet", "cutlass", "xmma", "sm90_",
             "splitkreduce", "aten::mm", "aten::addmm", "aten::bmm", "triton_tem"),
    "quant": ("quant", "amax"),  # activation quantization kernels (FP8), after gemm: quantbench::* ops are GEMMs
}
INDUCTOR_FUSED = ("triton_poi", "triton_red", "triton_per")


def category(name: str) -> str:
    low = name.lower()
    if low.startswith(INDUCTOR_FUSED):
        return "other"
    return next((cat for cat, keys in CATEGORIES.items() if any(k in low for k in keys)), "other")


def profile_step(step: Callable[[], object], steps: int, device: torch.device, top: int = 8) -> dict:
    """Run `step` `steps` times under the profiler; per-step time and count by category, and the `top` kernels/ops
    by time. CUDA: kernel device time; CPU: each op's self CPU time (nested ops are not counted twice)."""
    if steps < 1:
        raise ValueError(f"profile_steps={steps} must be >= 1")
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    rows = []
    for e in prof.key_averages():
        us = e.device_time_total if cuda else e.self_cpu_time_total
        if us > 0:
            rows.append({"name": e.key[:160], "category": category(e.key), "ms_per_step": us / 1e3 / steps,
                         "count_per_step": e.count / steps})
    rows.sort(key=lambda r: -r["ms_per_step"])
    per_ms = {c: 0.0 for c in (*CATEGORIES, "other")}
    per_n = dict.fromkeys(per_ms, 0.0)
    for r in rows:
        per_ms[r["category"]] += r["ms_per_step"]
        per_n[r["category"]] += r["count_per_step"]
    return {"steps": steps, "timed": "cuda_kernels" if cuda else "cpu_self_time",
            "ms_per_step": {"total": sum(per_ms.values()), **per_ms},
            "count_per_step": {"total": sum(per_n.values()), **per_n}, "top": rows[:top]}
