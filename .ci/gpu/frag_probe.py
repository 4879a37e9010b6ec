"""Run the frag W4A16 kernel once per config on one shape, for Nsight Compute to profile, or (--time) time each
config replayed from a CUDA graph with the L2 flushed (device machine):
    [ncu ...] python3 .ci/gpu/frag_probe.py [--time [--no-copy]] KxN \
        M:block_m:block_n:num_warps:num_stages:split_k[:permute_x] ...
Random codes and fp16 scales, as the tuner uses; each config's result is checked against the torch reference.
--no-copy times the kernel without the copy of x into fragment order (x read as it is: wrong results, the time
of the kernel alone)."""

import sys

import torch

from kernels import w4a16 as k
from kernels.timing import graph_time_ms, l2_flush_buffer
from kernels.w4a16_tune import random_layer, rel_err

args = sys.argv[1:]
timed = args[0] == "--time"
args = args[1:] if timed else args
no_copy = args[0] == "--no-copy"
args = args[1:] if no_copy else args
K, N = (int(v) for v in args[0].split("x"))
qweight, scales = random_layer(K, N, "cuda")
flush = l2_flush_buffer("cuda")
fragment_order = k._fragment_order
for spec in args[1:]:
    M, bm, bn, warps, stages, split, *px = (int(v) for v in spec.split(":"))
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    cfg = dict(path="frag", block_m=bm, block_n=bn, block_k=128, split_k=split, num_warps=warps, num_stages=stages,
               permute_x=bool(px and px[0]))
    y = k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, validate=False, **cfg)
    ref = k.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4, validate=False)
    err = rel_err(y, ref)
    line = f"K={K} N={N} {spec}: rel err {err:.1e}"
    if no_copy:  # from here on x is read unpermuted: the kernel's time alone, not its result
        k._fragment_order = lambda x: x
        line += ", then timed without the copy of x"
    if timed:
        ms = graph_time_ms(lambda: k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, validate=False,
                                                         **cfg), 3, 50, flush)[0]
        gbps = (K * N / 2 + K // 128 * N * 2) / ms / 1e6
        line += f"  {ms * 1e3:.1f} us  {gbps:.0f} GB/s (weights + scales)"
    k._fragment_order = fragment_order
    print(line, flush=True)
