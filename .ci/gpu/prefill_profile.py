"""Device machine: where a 1 x 2048-token prefill of the Llama-2-7B shape (random weights) spends its GPU time,
bf16 vs FP8 (dynamic per-tensor): CUDA-event median of 5 after warm-up, then one profiled prefill, its kernels
grouped by name (top 12 by GPU time). Written for issue 7's FP8 prefill target (>= 1.3x bf16 at 2048)."""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from harness.metrics.decode import StaticDecoder
from gpu_model import preset_model
from gpu_model import prompt as fixed_prompt

device = torch.device("cuda")
for name in sys.argv[1:] or ("none", "fp8"):
    model = preset_model(name, device)
    dec = StaticDecoder(model, 1, 2048, 1)
    prompt = fixed_prompt(1, 2048, device)
    with torch.no_grad():
        for _ in range(2):
            dec.prefill(prompt)
        times = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            dec.prefill(prompt)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            dec.prefill(prompt)
            torch.cuda.synchronize()
    times.sort()
    total = sum(e.device_time_total for e in prof.key_averages()) / 1e3
    print(f"{name}: prefill 2048 median {times[2]:.2f} ms ({2048 / times[2] * 1e3:.0f} tok/s); "
          f"profiled GPU kernel time {total:.2f} ms; attn impl {model.config._attn_implementation}")
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:12]:
        print(f"  {e.device_time_total / 1e3:8.2f} ms  {e.count:5d}x  {e.key[:110]}")
    del model, dec
    torch.cuda.empty_cache()
