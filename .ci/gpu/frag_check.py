"""Correctness probe of the frag W4A16 kernel per config on the GPU (device machine), in a fresh process:
    python3 .ci/gpu/frag_check.py KxN M:block_m:block_n:num_warps:num_stages:split_k[:stream_k] ...
For each config: relative error against an fp32 reference, whether two runs agree bit for bit, whether the
split-K workspace and counters are left zero, and where the error sits (by row of the weight tile, n % BLOCK_N,
and by M-row), so a wrong layout or a race shows its pattern. Random codes and fp16 scales, as the tuner uses."""

import sys

import torch

from kernels import splitk
from kernels import w4a16 as k
from kernels.w4a16_tune import random_layer, rel_err

torch.backends.cuda.matmul.allow_tf32 = False
K, N = (int(v) for v in sys.argv[1].split("x"))
gen = torch.Generator(device="cuda").manual_seed(0)
qweight, scales = random_layer(K, N, "cuda", generator=gen)
w = k._dequant(qweight, scales, None, None, 128, 4, K).half().float()
for spec in sys.argv[2:]:
    M, bm, bn, warps, stages, split, *sk = (int(v) for v in spec.split(":"))
    x = torch.randn(M, K, device="cuda", generator=gen).half()
    ref = x.float() @ w
    cfg = dict(path="frag", block_m=bm, block_n=bn, block_k=128, split_k=split, num_warps=warps, num_stages=stages,
               stream_k=sk[0] if sk else 0)
    try:
        y1 = k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, validate=False, **cfg).float()
        y2 = k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, validate=False, **cfg).float()
    except Exception as e:
        print(f"K={K} N={N} {spec}: {type(e).__name__}: {str(e)[:200]}", flush=True)
        continue
    torch.cuda.synchronize()
    err = rel_err(y1, ref)
    same = torch.equal(y1, y2)
    key = (x.device.type, x.device.index)
    dirty = ""
    if key in splitk._WORKSPACES:
        ws, cnt = splitk._WORKSPACES[key]
        if ws.any() or cnt.any():
            dirty = f" workspace left dirty ({int((ws != 0).sum())} values, {int((cnt != 0).sum())} counters)"
            ws.zero_(), cnt.zero_()
    d = (y1 - ref).abs()
    tol = 1e-2 * ref.abs().mean()
    bad = d > tol
    line = f"K={K} N={N} {spec}: rel err {err:.2e}, max {d.max().item():.3g}, bad {bad.float().mean().item():.4f}, " \
           f"repeat {'identical' if same else 'DIFFERS'}{dirty}"
    if bad.any():
        by_n = bad.float().mean(0).view(-1, bn)[:, :].mean(0) if N % bn == 0 else None
        by_m = bad.float().mean(1)
        if by_n is not None:
            rows = (by_n > 0.5 * by_n.max()).nonzero().flatten().tolist()
            line += f"\n    n % {bn} mostly wrong: {rows[:64]}{' ...' if len(rows) > 64 else ''}"
        mrows = (by_m > 0.5 * by_m.max()).nonzero().flatten().tolist()
        line += f"\n    M-rows mostly wrong ({len(mrows)}): {mrows[:48]}"
        by_tile = bad.float().view(M, -1, bn).mean((0, 2)) if N % bn == 0 else None
        if by_tile is not None:
            line += f"\n    N-tiles with errors: {(by_tile > 0).sum().item()} of {by_tile.numel()}"
    print(line, flush=True)
