"""Device machine: decode attention (one query token per sequence) over a static cache, our split-KV kernel
(kernels/attention.py) against torch SDPA with the same boolean key mask (the backend torch picks: cuDNN on an
H100), one call per CUDA-graph replay, L2 flushed; Llama-2-7B (32 KV heads) and Llama-3-8B (8 KV heads) heads.

    python .ci/gpu/attention_bench.py
"""

import torch

from kernels import attention as k
from kernels.timing import graph_time_ms, l2_flush_buffer

dev = torch.device("cuda")
flush = l2_flush_buffer(dev)
for name, H, Hk in (("llama-2-7b", 32, 32), ("llama-3-8b", 32, 8)):
    for B in (1, 8, 32):
        for N in (288, 2048, 4096):
            q = torch.randn(B, H, 1, 128, device=dev, dtype=torch.bfloat16)
            kk, v = (torch.randn(B, Hk, N, 128, device=dev, dtype=torch.bfloat16) for _ in range(2))
            mask = (torch.arange(N, device=dev) < N - 16)[None, None, None, :].expand(B, 1, 1, N)
            kr, vr = (t.repeat_interleave(H // Hk, dim=1) for t in (kk, v)) if Hk != H else (kk, v)
            ours = graph_time_ms(lambda: k.decode_attention_triton(q, kk, v, mask), 3, 30, flush)[0]
            sdpa = graph_time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=mask),
                                 3, 30, flush)[0]
            err = (k.decode_attention_triton(q, kk, v, mask).float()
                   - k.decode_attention_ref(q, kk, v, mask).float()).abs().max().item()
            mb = 2 * kk.numel() * 2 / 1e6
            print(f"{name} B={B:3d} N={N:5d} KV {mb:7.1f} MB: split-KV {ours * 1e3:7.1f} us "
                  f"({mb / ours / 1e3:5.2f} TB/s), SDPA {sdpa * 1e3:7.1f} us; {sdpa / ours:4.2f}x; max err {err:.1e}")
