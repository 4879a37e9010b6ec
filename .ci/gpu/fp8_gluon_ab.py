"""The Gluon block-FP8 GEMM (kernels/fp8_gluon.py) as built in this process: correct against the float32
emulation, and graph-timed beside torch._scaled_mm per tensor and the tuned Triton block GEMM in the same run
(ratios comparable between processes that build different variants of it). Eleventh session: the consumers taking
turns to issue their wgmmas (a pair of turn mbarriers) measured 5-10% slower than letting them issue freely.
    python3 .ci/gpu/fp8_gluon_ab.py [KxN:M ...]"""

import sys

import torch

from kernels import fp8 as k
from kernels import fp8_gluon as g
from kernels.timing import interleaved_time_ms, l2_flush_buffer

dev = torch.device("cuda")
flush = l2_flush_buffer(dev)
specs = sys.argv[1:] or [f"{s}:{m}" for s in ("8192x57344", "8192x10240", "28672x8192", "4096x6144", "14336x4096")
                         for m in (512, 1024, 4096)]
for spec in specs:
    shape, M = spec.split(":")
    K, N, M = *(int(v) for v in shape.split("x")), int(M)
    w = torch.randn(N, K, device=dev) * 0.02
    wq, ws = k.quantize_fp8_block(w, (128, 128))
    x = torch.randn(M, K, device=dev).bfloat16()
    xq, xs = k.per_token_group_quant_fp8_triton(x, 128)
    ref = k.fp8_linear_ref(xq, xs, wq, ws, None, torch.float32, (128, 128))
    y = g.fp8_block_gemm_gluon(xq, xs, wq, ws)
    err = ((y.float() - ref).norm() / ref.norm()).item()
    wt, wts = k.quantize_fp8_per_tensor(w)
    xt, xts = k.quantize_fp8_per_tensor(x.float())
    t = interleaved_time_ms([lambda: g.fp8_block_gemm_gluon(xq, xs, wq, ws),
                             lambda: torch._scaled_mm(xt, wt.t(), xts, wts, out_dtype=torch.bfloat16),
                             lambda: k.fp8_block_gemm_triton(xq, xs, wq, ws, (128, 128))], 3, 20, flush)
    print(f"K={K} N={N} M={M}: rel err {err:.1e}; gluon {t[0][0] * 1e3:.1f} us, _scaled_mm {t[1][0] * 1e3:.1f}, "
          f"triton {t[2][0] * 1e3:.1f}; gluon / _scaled_mm {t[1][0] / t[0][0]:.2f}x, "
          f"triton / _scaled_mm {t[1][0] / t[2][0]:.2f}x", flush=True)
