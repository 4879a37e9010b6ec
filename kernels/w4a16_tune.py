"""Tune the W4A16 GEMM per (shape, M-bucket) on the GPU at hand: which path (skinny / tiled / dequant + cuBLAS)
and which tiles, written as `kernels/tuned/w4a16.json` ({gpu name: {tuning_key: config}}), the table
`kernels.w4a16.default_config` reads, so a user's first run on a tuned GPU needs no search.

    python -m kernels.w4a16_tune OUT.json --shapes 4096x12288 11008x4096 ... [--m 1 2 4 ...] [--merge FILE]

Each candidate is replayed from a CUDA graph (device time, as decode runs under graphs; not the Python launch
overhead) and timed with CUDA events after warm-up, the L2 cache flushed before every timed run (decode reads
weights from HBM, not from a warm cache), median of `iters` runs; candidates that fail to compile or launch
are skipped, and so is any whose result, checked before and after its timed replays, is off the torch reference
by MAX_REL_ERR or more. The first candidate is the untuned heuristic, so a tuned entry is never slower than it was.
"""

from __future__ import annotations

import argparse

import torch

from kernels import w4a16 as k
from kernels import w4a16_gluon
from kernels.timing import graph_time_ms, l2_flush_buffer
from kernels.tuning import open_table, write_table

# Skinny (M <= 16) tiles tried: (block_n, num_warps, num_stages) x block_k (rows) dividing the group size, so
# each K-block has one scale row.
SKINNY_TILES = ((128, 4, 3), (128, 4, 4), (256, 4, 4), (64, 4, 4))
SKINNY_BLOCK_K = (128, 64)
# GEMV (M <= 4, 4-bit) tiles: (block_n, block_k, num_warps, reduce_rows). One warp holds whole columns and sums a
# block's rows in registers; on the H100 a wider search (2- and 4-warp tiles, 1024 x 32, 256 x 128) never won.
# Built for sm_90 with triton 3.6 (the GPU machine's; `python -m kernels.sass gemv --m 4`), every 4-row tile
# above spills registers (118-1103 STL/LDL in the loop); 128 x 32 is the one-warp tile that does not (10.8
# instructions per weight against 7.8 for the spilling 256 x 64), so the tuner times it too.
GEMV_TILES = ((256, 64, 1, True), (512, 32, 1, True), (512, 64, 1, True), (256, 32, 1, True), (128, 32, 1, True),
              (128, 64, 1, True), (128, 128, 1, True), (256, 64, 2, True), (64, 64, 1, True))
# Narrow shapes (N = 4096: o, down) leave the 256-column one-warp tiles at ~3.5 warps per SM even split 32 ways,
# too few to hide the loads behind the unpacking (the back-to-back timing shows them at 1.0-1.2 TB/s against
# 2.0-2.3 for the wide ones): the 64/128-column and 2-warp tiles and split 64 give them more warps (up to 24
# one-warp programs per SM: an SM holds at most 32 blocks).
# Tiled (M 17..1024) tiles: (block_m, block_n, block_k, num_warps, num_stages, swap_ab). The first six are the
# earlier search; then larger tiles for the 16-bit dequantisation (cheap enough per weight that bigger BLOCK_M,
# i.e. fewer dequantisations per output, and deeper pipelines can pay) and the swapped variant (W^T @ x^T: the
# dequantized weights are wgmma's register A operand). BLOCK_M > 2 M is skipped: at most 20 per M.
TILED_TILES = ((64, 64, 64, 4, 4, False), (64, 128, 64, 4, 4, False), (128, 128, 64, 4, 3, False),
               (128, 128, 64, 8, 3, False), (128, 256, 64, 8, 3, False), (64, 256, 64, 8, 3, False),
               (64, 128, 128, 4, 3, False), (128, 128, 128, 8, 3, False), (128, 256, 64, 8, 4, False),
               (128, 128, 64, 4, 5, False), (64, 256, 128, 8, 3, False), (128, 64, 64, 4, 4, False),
               (64, 128, 64, 4, 5, False), (128, 128, 64, 8, 4, False),
               (64, 128, 64, 4, 4, True), (64, 64, 64, 4, 4, True), (128, 128, 64, 4, 3, True),
               (128, 128, 64, 8, 4, True), (64, 256, 64, 8, 3, True), (128, 256, 64, 8, 3, True))

# Code-plane (M > 16, 4-bit, 128-row K-blocks) tiles: (block_m, block_n, num_warps, num_stages). Built for sm_90
# offline (`python -m kernels.sass planes`): ~5.2 instructions per weight and BLOCK_M rows, no shared-memory
# round trip for the weights; not yet timed on a GPU, so the tuner decides. 64 x 128 / 4 warps leaves room for
# two CTAs per SM (one's dequantization beside the other's wgmma).
PLANES_TILES = ((64, 128, 4, 3), (64, 128, 4, 4), (128, 128, 4, 3), (128, 128, 8, 3), (64, 256, 8, 3),
                (128, 256, 8, 3), (64, 64, 4, 4), (32, 128, 4, 4))

# Fragment-order (4-bit, K and groups multiples of 128, 16-bit x; any M) tiles: (block_m, block_n, num_warps,
# num_stages). Built for sm_90 offline (`python -m kernels.sass frag`, triton 3.6): 2.8 (16 x 256, 4 warps) to
# 5.0 (128 x 128, 8 warps) instructions per weight and BLOCK_M rows (before each K-block's wgmmas were made to
# retire within the block, `kernels/w4a16.py`).
# BLOCK_M 16-64 for decode-sized M (split-K fills the SMs), 128-256 for prefill.
FRAG_TILES = ((16, 128, 4, 3), (16, 128, 4, 4), (16, 256, 4, 3), (16, 64, 4, 4), (32, 128, 4, 3), (32, 256, 4, 3),
              (64, 128, 4, 3), (64, 128, 4, 4), (64, 256, 8, 3), (128, 128, 8, 3), (128, 128, 8, 4),
              (128, 256, 8, 3), (256, 128, 8, 3), (128, 128, 4, 3))
# Also tried for M <= 16, where the bytes in flight decide: at 16 x 256 the pipeliner keeps num_stages - 2 K-blocks
# of words (16 KB each) in flight beside the one being read, with 247 registers a thread (two CTAs per SM); the
# 8-warp tile needs 127.
FRAG_DECODE_TILES = ((16, 256, 4, 4), (16, 256, 4, 5), (16, 256, 8, 4), (16, 128, 4, 5))
# ... and, at these tiles, with x permuted in the kernel (`permute_x`) rather than copied into fragment order first;
# above M = 16 at the 32- and 64-row tiles up to FRAG_PERMUTE_X_MAX_M, where the copy's own launch is a visible part
# of a 4096 x 4096 layer's ~20 us (Llama-3-8B o at M = 64: 21.7 us, cuBLAS fp16 21.8; ninth session).
FRAG_PERMUTE_X_TILES = ((256, 4, 3), (256, 4, 4), (128, 4, 3), (128, 4, 4))
FRAG_PERMUTE_X_MAX_M = 128
# Stream-K launches (programs per SM) tried beside them at every M, where one program per tile leaves the last wave
# partly filled: Llama-3-70B qkv at M = 256 is 80 tiles of 256 x 128 on 132 SMs (0.61 of a wave), its gate_up 448
# (3.39 waves: the fourth runs 39% full). At decode, Llama-3-70B gate_up is 224 tiles of 16 x 256 for 264 CTA
# slots (2 an SM): 92 SMs run two tiles, 40 run one.
FRAG_STREAM_K = (1, 2)
# Split-K where the tiles outnumber the SMs does not pay: Llama-3-70B gate_up's 224 tiles fill 0.85 of the 264
# slots (2 CTAs an SM), yet split 2 / 4 / 8 ran 114-124 us against 105 at M = 1-16 (H100, eighth session, call 10).


# A candidate's result against the torch reference (fp32 accumulation, fp16 out): a correct kernel is at ~2e-4 (H100,
# K = 1024-28672); the races of the ninth session's frag tiles showed 5e-3 to 0.14, and NaN.
MAX_REL_ERR = 2e-3


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref|| in fp32 (NaN compares as failing)."""
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


def random_layer(K: int, N: int, device, bits: int = 4, group_size: int = 128,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(qweight, fp16 scales) of a symmetric layer with random codes and scales in [0.001, 0.011): what the tuner
    times and checks, and what the GPU checks of tuned entries and the device probes run."""
    codes = torch.randint(0, 2**bits, (K, N), device=device, dtype=torch.int32, generator=generator)
    scales = torch.rand(k._num_groups(K, group_size), N, device=device, generator=generator) * 0.01 + 0.001
    return k.pack_int_weights(codes, bits), scales.half()


# M range where the Gluon W4A16 kernel (`kernels.w4a16_gluon`) is offered: on the H100 it beat the tuned path at
# M = 256 on 8 of 11 Llama shapes and at M = 512 on all 11 (eleventh session), and at M = 128 on 5 of 11 with one or
# two consumers (twelfth, call 3); at 1024 dequantize + cuBLAS won then, before the words came by TMA (call 8: two
# consumers 0.67-0.80x cuBLAS fp16 there; dequantize + cuBLAS 0.75-0.78x in another run). Offered up to 4096 since
# the 128 x 256 tiles (two warpgroups in step), for the tuner to decide: on an H200 (thirteenth session) they won
# 5 of 11 shapes at M = 1024 and none at 4096, where dequantize + cuBLAS ran 0.94-0.95x.
GLUON_M = (65, 4096)


def candidates(M: int, N: int, K: int, bits: int, sms: int, group_size: int = 128) -> list[dict]:
    """Configs worth timing for this M (the heuristic default is timed first, by tune_shape)."""
    per = 32 // bits
    gs = K if group_size == -1 else group_size
    out = []
    if M <= k.GEMV_MAX_M and bits == 4:
        for bn, bk, warps, reduce_rows in GEMV_TILES:
            if gs % bk:
                continue
            tiles = k._cdiv(N, bn)
            for split in (1, 2, 4, 8, 16, 32, 64):
                if split > 1 and (split * bk > K or tiles * split > 24 * sms):
                    continue
                if split == 1 or tiles * split >= sms // 2:
                    for stages in (2, 3):
                        out.append(dict(path="gemv", block_n=bn, block_k=bk, split_k=split, num_warps=warps,
                                        num_stages=stages, reduce_rows=reduce_rows))
    if M <= k.SKINNY_MAX_M:
        for (bn, warps, stages), bk in ((t, b) for t in SKINNY_TILES for b in SKINNY_BLOCK_K):
            if gs % bk:  # one scale row per block
                continue
            tiles = k._cdiv(N, bn)
            for split in (1, 2, 4, 8, 16):
                if split > 1 and (tiles * split > 16 * sms or split * bk > K):
                    continue
                if split == 1 or tiles * split >= sms // 2:
                    for use_dot in (False, True):
                        if (use_dot and bk < 16 * per) or (not use_dot and M > 8):
                            continue
                        out.append(dict(path="skinny", block_n=bn, block_k=bk, split_k=split, num_warps=warps,
                                        num_stages=stages, use_dot=use_dot))
    else:
        for bm, bn, bk, warps, stages, swap in TILED_TILES:
            if bm > 2 * M and bm > 64:  # mostly padding rows
                continue
            if bk > 64 and (gs % bk and gs != K):  # keep one scale row per K-block where the 64-row tile has one
                continue
            tiles = k._cdiv(M, bm) * k._cdiv(N, bn)
            split = max(1, min(8, 4 * sms // tiles, k._cdiv(K, bk) // 2)) if bm <= 64 else 1
            cfg = dict(path="tiled", block_m=bm, block_n=bn, block_k=bk, split_k=split, num_warps=warps,
                       num_stages=stages)
            if swap:
                cfg["swap_ab"] = True
            out.append(cfg)
        if bits == 4 and gs % 128 == 0 and K % 128 == 0:
            for bm, bn, warps, stages in PLANES_TILES:
                if bm > 2 * M and bm > 64:
                    continue
                tiles = k._cdiv(M, bm) * k._cdiv(N, bn)
                split = max(1, min(8, 2 * sms // tiles, K // 256)) if tiles < sms else 1
                out.append(dict(path="planes", block_m=bm, block_n=bn, block_k=128, split_k=split, num_warps=warps,
                                num_stages=stages))
        for bn, bk in ((128, 16 * per), (256, 32 * per)):
            out.append(dict(path="dequant", block_n=bn, block_k=bk, split_k=1, num_warps=4, num_stages=1))
    if bits == 4 and GLUON_M[0] <= M <= GLUON_M[1] and K % 256 == 0 and gs > 0 and gs % 128 == 0 and N % 64 == 0:
        for c in (1, 2) if N % 128 == 0 else (1,):  # the warp-specialised Gluon kernel (Hopper), its own tiles
            out.append(dict(path="gluon", consumers=c))
            if M <= 128:  # 64-token tiles: twice the programs where 128-token ones leave SMs idle (small N)
                out.append(dict(path="gluon", consumers=c, block_m=64))
            if M > 128 and c == 2:  # 128 x 256 tiles: two warpgroups in step
                out.append(dict(path="gluon", consumers=2, block_m=256))
    if k.frag_layout_supported(K, group_size, bits, False) is None:
        for bm, bn, warps, stages in FRAG_TILES + (FRAG_DECODE_TILES if M <= 16 else ()):
            if (bm > 2 * M and bm > 16) or (bm < M // 8 and bm < 128):  # mostly padding / too many M-tiles
                continue
            tiles = k._cdiv(M, bm) * k._cdiv(N, bn)
            splits = [1]
            if tiles < sms:  # too few tiles for the SMs: also a split whose programs fill them about twice
                splits.append(min(k.pow2_near(2 * sms / tiles), 32, K // 256))
            permute = (False, True) if ((M <= 16 and bm == 16 and (bn, warps, stages) in FRAG_PERMUTE_X_TILES)
                                        or (16 < M <= FRAG_PERMUTE_X_MAX_M and bm in (32, 64))) else (False,)
            for split in sorted(set(splits)):
                for px in permute:
                    out.append(dict(path="frag", block_m=bm, block_n=bn, block_k=128, split_k=split, num_warps=warps,
                                    num_stages=stages) | ({"permute_x": True} if px else {}))
            # stream-K: every SM the same share of the K-blocks, whatever the tile count; up to M = 16 only the
            # launch that keeps every program resident (two 4-warp decode CTAs an SM, one of 8 warps)
            for per_sm in FRAG_STREAM_K if M > 16 else (8 // warps,):
                for px in permute:
                    out.append(dict(path="frag", block_m=bm, block_n=bn, block_k=128, split_k=1, num_warps=warps,
                                    num_stages=stages, stream_k=per_sm) | ({"permute_x": True} if px else {}))
    return out


def tune_shape(K: int, N: int, m_values, device, bits: int = 4, group_size: int = 128, iters: int = 15,
               log=print, paths=k.PATHS) -> dict[str, dict]:
    """Best config per M-bucket for one (K, N) with random codes, fp16 activations."""
    qweight, scales = random_layer(K, N, device, bits, group_size)
    zeros = None  # symmetric (a sym GPTQ layer): the kernel reads no zeros
    flush = l2_flush_buffer(device)
    sms = k._num_sms(torch.device(device).index or 0)
    table = {}
    for M in m_values:
        x = torch.randn(M, K, device=device, dtype=torch.float16)
        ref = k.w4a16_matmul_ref(x, qweight, scales, zeros, None, group_size, bits, validate=False)
        default = {n: v for n, v in k.default_config(M, N, K, group_size, False, device, bits).items()
                   if n != "fallback"}
        if default["path"] == "gluon":  # an entry from before the consumers field: it ran the untuned count
            default.setdefault("consumers", w4a16_gluon.consumers(M, N))
        results = []
        for cfg in [default] + [c for c in candidates(M, N, K, bits, sms, group_size) if c["path"] in paths]:
            def run():
                return k.w4a16_matmul_triton(x, qweight, scales, zeros, None, group_size, bits, validate=False, **cfg)
            try:
                errs = [rel_err(run(), ref)]
                if errs[0] < MAX_REL_ERR:
                    ms = graph_time_ms(run, 2, iters, flush)[0]
                    errs.append(rel_err(run(), ref))  # again after the replays: a race shows run to run
                if not all(e < MAX_REL_ERR for e in errs):  # NaN fails
                    log(f"  rejected (rel err {', '.join(f'{e:.2e}' for e in errs)}): {cfg}")
                    continue
            except Exception as e:  # a config this GPU/compiler cannot run: skip it
                log(f"  skipped {cfg}: {type(e).__name__}: {str(e)[:120]}")
                continue
            results.append((ms, cfg))
        results.sort(key=lambda r: r[0])
        best_ms, best = results[0]
        default_ms = next(ms for ms, c in results if c is default) if any(c is default for _, c in results) else None
        key = k.tuning_key(M, N, K, bits, group_size, False)
        table[key] = best | {"median_ms": round(best_ms, 5),
                             "default_ms": round(default_ms, 5) if default_ms else None}
        if best["path"] == "gluon":  # what calls the Gluon kernel does not take (bf16, pre-multiplied zeros) run
            fb_ms, fb = next(((ms, c) for ms, c in results if c["path"] != "gluon"), (None, None))
            if fb is not None:
                table[key]["fallback"] = {n: v for n, v in fb.items() if n in k.CONFIG_KEYS} | {
                    "median_ms": round(fb_ms, 5)}
        log(f"K={K:6d} N={N:6d} M={M:5d} best {best_ms:.4f} ms (default {default_ms or float('nan'):.4f}) {best}")
    return table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kernels.w4a16_tune", description=__doc__)
    ap.add_argument("out", help="JSON table to write (merged with --merge / an existing file)")
    ap.add_argument("--shapes", nargs="+", required=True, help="KxN pairs (in_features x out_features)")
    ap.add_argument("--m", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--merge", default=None, help="start from this table (e.g. the committed one)")
    ap.add_argument("--paths", nargs="+", default=list(k.PATHS), help="only try candidates of these paths")
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    table = open_table(args.out, args.merge)
    entries = table.setdefault(gpu, {})
    for shape in args.shapes:  # the table is rewritten after each shape: a time-out keeps what was tuned
        K, N = (int(v) for v in shape.lower().split("x"))
        entries.update(tune_shape(K, N, args.m, device, group_size=args.group_size, iters=args.iters,
                                  paths=args.paths))
        torch.cuda.empty_cache()
        write_table(args.out, table)
    print(f"wrote {args.out}: {len(entries)} entries for {gpu}")


if __name__ == "__main__":
    main()
