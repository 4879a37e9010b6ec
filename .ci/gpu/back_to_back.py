"""Device machine: one GEMM per CUDA graph with the L2 flushed before it (how the kernel benchmark and tuners
time) against many calls back to back in one graph, each on its own copy of the weights (copies together over
twice the L2, so every call reads HBM, as a decode step's layers do). The difference is the fixed cost of a
lone replay (graph launch, ramp-up and tail) that a decode step pays once per kernel only in part.

    python .ci/gpu/back_to_back.py [--models llama-2-7b] [--m 1] [--backends cublas_bfloat16 ...]
"""

import argparse

import torch

from harness.metrics import kernels as km
from kernels.timing import graph_time_ms, l2_flush_buffer

ap = argparse.ArgumentParser()
ap.add_argument("--models", nargs="*", default=["llama-2-7b"])
ap.add_argument("--m", nargs="*", type=int, default=[1])
ap.add_argument("--backends", nargs="*", default=["cublas_bfloat16", "triton_w4a16_g128", "scaled_mm_tensor",
                                                   "triton_fp8_gemv_tensor"])
args = ap.parse_args()
device = torch.device("cuda")
L2 = torch.cuda.get_device_properties(device).L2_cache_size
ours = km.w4a16_backends(zero_forms=("", "_zp", "_zs16"))  # _zs16: the pre-multiplied zeros layers held before
backends = {b.name: b for b in km.torch_backends() + km.fp8_backends() + ours}
flush = l2_flush_buffer(device)
print(f"L2 {L2 / 2**20:.0f} MiB; per call: lone graph replay with L2 flush | back to back in one graph")
for model in args.models:
    for layer, (K, N) in km.MODEL_SHAPES[model].items():
        for name in args.backends:
            b = backends[name]
            run, w_bytes, dt = b.build(K, N, device)
            copies = [run] + [b.build(K, N, device)[0] for _ in range(max(1, min(24, -(-3 * L2 // w_bytes))) - 1)]
            for m in args.m:
                x = torch.randn(m, K, device=device, dtype=dt)
                lone = graph_time_ms(lambda: run(x), 3, 30, flush)[0]
                reps = max(16, len(copies))

                def many():
                    for i in range(reps):
                        copies[i % len(copies)](x)

                total = graph_time_ms(many, 2, 15)[0]
                per = total / reps
                gbps = (w_bytes + m * K * 2 + m * N * 2) / (per * 1e-3) / 1e9
                print(f"{model} {layer:8s} {name:24s} M={m} lone {lone * 1e3:7.1f} us | back to back "
                      f"{per * 1e3:7.1f} us ({gbps:5.0f} GB/s, {len(copies)} weight copies, {reps} calls)")
            copies = run = None  # free this backend's weight copies before the next one
            torch.cuda.empty_cache()
