"""Device machine: the split-KV decode attention's launch shape (splits, keys a block, warps) at batch 1 with
Llama-2-7B heads (32 query and KV heads, head dim 128), timed as a decode step runs it: 32 layers' caches (more
than the L2 holds) attended one after another in one CUDA graph, per call the median of 20 replays. The default
(`split_count`, kernels.attention.BLOCK_N keys a block, NUM_WARPS warps; in call 31, before they changed,
32 keys and 4 warps) is the first line of each cache length.

    python .ci/gpu/attention_sweep.py
"""

import itertools

import torch

from kernels import attention as k
from kernels.timing import cuda_time_ms

dev = torch.device("cuda")
LAYERS, H, D = 32, 32, 128
for N, filled in ((320, 288), (2048, 2000)):
    q = torch.randn(1, H, 1, D, device=dev, dtype=torch.bfloat16)
    caches = [tuple(torch.randn(1, H, N, D, device=dev, dtype=torch.bfloat16) for _ in range(2))
              for _ in range(LAYERS)]
    mask = (torch.arange(N, device=dev) < filled)[None, None, None, :]
    ref = k.decode_attention_ref(q, *caches[0], mask)

    def per_call_us(**kw):
        out = k.decode_attention_triton(q, *caches[0], mask, **kw)
        assert (out.float() - ref.float()).abs().max().item() < 2e-2, kw
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for kk, v in caches:
                k.decode_attention_triton(q, kk, v, mask, **kw)
        return cuda_time_ms(graph.replay, warmup=2, iters=20)[0] * 1e3 / LAYERS

    default = k.split_count(1, H, N, dev)
    rows = [(per_call_us(), f"default: splits {default}, block_n {k.BLOCK_N}, {k.NUM_WARPS} warps")]
    for bn, splits, warps in itertools.product((16, 32, 64), (2, 4, 5, 8, 10, 16, 20, 40), (1, 2, 4)):
        if splits * bn > N:
            continue
        used = -(-N // (-(-(-(-N // splits)) // bn) * bn))  # the launcher rounds each split to whole blocks
        rows.append((per_call_us(splits=splits, block_n=bn, num_warps=warps),
                     f"splits {used} (asked {splits}), block_n {bn}, {warps} warps"))
    print(f"N={N} ({filled} keys visible): {rows[0][0]:.2f} us a layer with the default")
    for us, what in sorted(rows)[:8]:
        print(f"  {us:6.2f} us  {what}")
