"""Device machine: W4A16 decode-GEMV configs (M = 1) timed as a decode step runs them, many calls back to back in
one CUDA graph launched with PDL, each call on its own copy of the weights (together over 3x the L2, so every call
reads HBM), against the tuned table's entry, which was timed as lone replays with the L2 flushed. Writes the table
with each shape's back-to-back winner to --out (point $QUANTBENCH_W4A16_TUNING at it).

    python .ci/gpu/gemv_b2b_tune.py --out /root/qb/w4a16.json [--shapes 4096x4096 ...] [--m 1]
    python .ci/gpu/gemv_b2b_tune.py --table-only --zeros none codes float16   (the table's entries, per zero form)
"""

import argparse
import json
import math
import os

import torch

from kernels import w4a16 as k
from kernels.launch import programmatic_launch
from kernels.timing import graph_time_ms
from kernels.tuning import gpu_name, load_table

ap = argparse.ArgumentParser()
ap.add_argument("--out", default=None)
ap.add_argument("--shapes", nargs="*", default=["4096x12288", "4096x4096", "4096x22016", "11008x4096"])
ap.add_argument("--m", type=int, default=1)
ap.add_argument("--table-only", action="store_true", help="time only the table's entry (no search)")
ap.add_argument("--zeros", nargs="*", default=["none"], choices=["none", "codes", "float16"],
                help="the layers' zero points: none (symmetric), uint8 codes, fp16 pre-multiplied")
args = ap.parse_args()
dev = torch.device("cuda")
sms = torch.cuda.get_device_properties(dev).multi_processor_count
l2 = torch.cuda.get_device_properties(dev).L2_cache_size
gs, M = 128, args.m
table = json.loads(json.dumps(load_table(os.environ.get(k.TUNING_ENV, k.TUNED_FILE))))  # the table the kernel reads
entries = table.setdefault(gpu_name(0), {})
print(f"{gpu_name(0)}: M={M}, back to back under PDL, us per call")


def candidates(K: int, N: int) -> list[dict]:
    out = []
    for bn in (64, 128, 256, 512):
        for bk in (32, 64, 128):
            for split in (4, 8, 16, 32, 64, 128):
                if split * bk > K or not sms // 2 <= -(-N // bn) * split <= 32 * sms:
                    continue
                for stages, spread in ((2, False), (3, False), (2, True), (3, True)):
                    out.append(dict(path="gemv", block_n=bn, block_k=bk, split_k=split, num_warps=1,
                                    num_stages=stages, reduce_rows=True, spread_x=spread))
    return out


for shape in args.shapes:
    K, N = (int(v) for v in shape.split("x"))
    for zform in args.zeros:
        def layer():
            s = (torch.rand(K // gs, N, device=dev) * 0.01 + 0.001).half()
            z = torch.randint(0, 16, (K // gs, N), device=dev)
            zeros = {"none": None, "codes": z.to(torch.uint8), "float16": k.premultiply_zeros(z, s)}[zform]
            return k.pack_int_weights(torch.randint(0, 16, (K, N), device=dev, dtype=torch.int32), 4), s, zeros

        w_bytes = K * N // 2 + K // gs * N * 2
        n = max(4, min(24, math.ceil(3 * l2 / w_bytes)))
        copies = [layer() for _ in range(n)]
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        ref = k.w4a16_matmul_ref(x, *copies[0], None, gs, 4)
        current = {c: v for c, v in k.default_config(M, N, K, gs, False, dev, 4, zform == "codes").items()
                   if c in k.CONFIG_KEYS}
        reps = max(16, n)
        results = []
        for cfg in [current] + ([] if args.table_only else candidates(K, N)):
            tiles = {c: v for c, v in cfg.items() if c in k.CONFIG_KEYS}
            try:
                y = k.w4a16_matmul_triton(x, *copies[0], None, gs, 4, validate=False, **tiles)
                err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
                if not err < 1e-2:
                    raise ValueError(f"rel err {err:.3g}")

                def many():
                    for i in range(reps):
                        k.w4a16_matmul_triton(x, *copies[i % n], None, gs, 4, validate=False, **tiles)

                with programmatic_launch(True):
                    ms = graph_time_ms(many, 2, 15)[0] / reps
            except Exception as e:  # a config the kernel refuses or that fails: skip it
                print(f"  {shape} {tiles}: {type(e).__name__}: {str(e)[:80]}")
                continue
            results.append((ms, tiles))
        cur = results[0][0]
        results.sort(key=lambda r: r[0])
        for ms, t in results[:5]:
            print(f"  {shape} {ms * 1e3:6.2f} us  bn={t['block_n']} bk={t['block_k']} split={t['split_k']} "
                  f"stages={t['num_stages']} spread_x={t.get('spread_x', False)}")
        best_ms, best = results[0]
        print(f"{shape} zeros={zform}: table's entry {cur * 1e3:.2f} us ({current['block_n']}x{current['block_k']} "
              f"split {current['split_k']}), best {best_ms * 1e3:.2f} us ({cur / best_ms:.3f}x)")
        if not args.table_only:
            entries[k.tuning_key(M, N, K, 4, gs, False, zform == "codes")] = best | {
                "median_ms": round(best_ms, 5), "default_ms": round(cur, 5), "timed": "back_to_back_pdl"}
        copies = None
        torch.cuda.empty_cache()
if args.out:
    with open(args.out, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    print(f"wrote {args.out}")
