"""Stress the split-K / stream-K reduction of the frag kernel (device machine): each config run RUNS times on its
layer shape; before each run the workspace and counters are checked clean (a dirty one names the run that left it),
after each run the result is checked against the fp32 reference and the workspace again.
    python3 .ci/gpu/splitk_stress.py RUNS KxN:M:block_m:block_n:warps:stages:split[:stream_k[:permute_x]] ..."""

import sys

import torch

from kernels import splitk
from kernels import w4a16 as k
from kernels.w4a16_tune import MAX_REL_ERR, random_layer, rel_err

runs = int(sys.argv[1])
layers = {}
for spec in sys.argv[2:]:
    shape, *rest = spec.split(":")
    K, N = (int(v) for v in shape.split("x"))
    M, bm, bn, warps, stages, split, *opt = (int(v) for v in rest)
    if (K, N) not in layers:
        layers.clear()
        torch.cuda.empty_cache()
        layers[(K, N)] = random_layer(K, N, "cuda", generator=torch.Generator(device="cuda").manual_seed(K + N))
    qweight, scales = layers[(K, N)]
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    ref = k.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4, validate=False)
    cfg = dict(path="frag", block_m=bm, block_n=bn, block_k=128, split_k=split, num_warps=warps, num_stages=stages,
               stream_k=opt[0] if opt else 0, permute_x=bool(opt[1]) if len(opt) > 1 else False)
    bad, dirty_before, dirty_after, errs = 0, 0, 0, []
    for i in range(runs):
        key = ("cuda", 0)
        if key in splitk._WORKSPACES:
            ws, cnt = splitk._WORKSPACES[key]
            torch.cuda.synchronize()
            if ws.any() or cnt.any():
                dirty_before += 1
                ws.zero_(), cnt.zero_()
        y = k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, validate=False, **cfg)
        e = rel_err(y, ref)
        errs.append(e)
        bad += not e < MAX_REL_ERR
        ws, cnt = splitk._WORKSPACES.get(key, (torch.zeros(1, device="cuda"), torch.zeros(1, device="cuda")))
        if ws.any() or cnt.any():
            dirty_after += 1
            ws.zero_(), cnt.zero_()
    errs.sort()
    print(f"{spec}: {bad}/{runs} runs off (rel err median {errs[len(errs) // 2]:.1e}, max {errs[-1]:.1e}); "
          f"workspace dirty before {dirty_before}, after {dirty_after}", flush=True)
