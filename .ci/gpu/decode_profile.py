"""Device machine: where a compiled, fused batch-1 decode step of the Llama-2-7B shape (random weights) spends
its GPU time, per method: the step's wall time replayed from a CUDA graph (CUDA events, median of 20), then
10 compiled steps run outside the graph under the profiler, kernels grouped by name (per-step time and count,
top 14), and the GEMM/GEMV kernels' share. Written for issue 7's 4-bit batch-1 target (2.5x bf16).

    python .ci/gpu/decode_profile.py none gptq
"""

import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from harness.metrics.decode import StaticDecoder
from gpu_model import preset_model
from gpu_model import prompt as fixed_prompt
from methods.fusion import fuse_projections

device = torch.device("cuda")
GEMM = ("w4a16", "gemv", "gemm", "nvjet", "sm90_xmma", "cutlass", "fp8", "scaled_mm")
for name in sys.argv[1:] or ("none", "gptq"):
    model = preset_model(name, device)
    fuse_projections(model)
    dec = StaticDecoder(model, 1, 256, 64)
    prompt = fixed_prompt(1, 256, device)
    dec.compile(prompt)
    with torch.no_grad():
        dec.prefill(prompt)
        times = []
        for _ in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            dec.step()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        dec.prefill(prompt)
        for _ in range(3):
            dec._compiled()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                dec._compiled()
            torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events) / 10 / 1e3
    gemm = sum(e.device_time_total for e in events if any(g in e.key.lower() for g in GEMM)) / 10 / 1e3
    count = sum(e.count for e in events) / 10
    print(f"{name}: graph-replayed step median {statistics.median(times):.3f} ms; profiled kernels {total:.3f} ms "
          f"a step in {count:.0f} kernels, GEMM/GEMV {gemm:.3f} ms")
    for e in events[:14]:
        print(f"  {e.device_time_total / 10 / 1e3:7.3f} ms {e.count / 10:6.1f}x  {e.key[:120]}")
    del model, dec
    torch.cuda.empty_cache()
