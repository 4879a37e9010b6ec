"""Does the kernel benchmark's block-FP8 row run the tuned tiles? (device machine; tenth session, call 6.) In call 5
the row ran at the untuned default's speed while the tuner, minutes before, timed the tuned tiles 20-30% faster.
Per shape and M: the tiles `_gemm_config` resolves, then graph-timed (L2 flushed, median) the GEMM with the default
tiles, with the tuned ones (config=None), fp8_linear as the benchmark calls it, and the activation quantization.
    python3 .ci/gpu/fp8_block_probe.py KxN:M ..."""

import sys

import torch

from kernels import fp8 as k
from kernels.timing import graph_time_ms, l2_flush_buffer

dev = torch.device("cuda")
flush = l2_flush_buffer(dev)
for spec in sys.argv[1:]:
    shape, M = spec.split(":")
    K, N = (int(v) for v in shape.split("x"))
    M = int(M)
    w = torch.randn(N, K, device=dev) * 0.02
    wq, ws = k.quantize_fp8_block(w, (128, 128))
    x = torch.randn(M, K, device=dev).bfloat16()
    xq, xs = k.per_token_group_quant_fp8_triton(x, 128)
    cfg = k._gemm_config(M, True, N, K, dev, (128, 128))
    default = k.default_gemm_config(M, True)
    runs = {
        "gemm default tiles": lambda: k.fp8_block_gemm_triton(xq, xs, wq, ws, (128, 128), config=dict(default)),
        "gemm table tiles": lambda: k.fp8_block_gemm_triton(xq, xs, wq, ws, (128, 128)),
        "fp8_linear (bench)": lambda: k.fp8_linear(x, wq, ws, backend="triton", block_size=(128, 128)),
        "group quant alone": lambda: k.per_token_group_quant_fp8_triton(x, 128),
    }
    print(f"K={K} N={N} M={M}: resolved {cfg}; xs {tuple(xs.shape)} strides {xs.stride()}")
    for name, fn in runs.items():
        ms = graph_time_ms(fn, 3, 20, flush)[0]
        print(f"  {name:20s} {ms * 1e3:9.1f} us  {2 * M * N * K / ms / 1e9:7.1f} TFLOP/s")
