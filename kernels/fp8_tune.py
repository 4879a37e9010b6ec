"""Tune the Triton FP8 GEMMs per (shape, M-bucket) on the GPU at hand: tiles for the block-scaled GEMM (128x128
weight blocks, per-token-group activation scales) and for the per-tensor/per-row one, written as
`kernels/tuned/fp8.json` ({gpu name: {tuning_key: config}}), the table `kernels.fp8._gemm_config` reads.

    python -m kernels.fp8_tune OUT.json --shapes 4096x12288 8192x57344 ... [--m 16 128 1024 4096] [--merge FILE]
        [--kinds block rows gemv] [--budget-s 240] [--iters 15] [--compare-gluon]

--compare-gluon (block-scaled, Hopper): no tile search; per (shape, M) the Gluon GEMM (`kernels.fp8_gluon`) is
timed beside the Triton GEMM with the table's tiles for that key (the heuristic's where there is none), and the
entry records the faster as `kernel` with both times (`triton_ms`, `gluon_ms`); fp8_linear's auto follows it.

Timed as kernels.w4a16_tune times: each candidate replayed from a CUDA graph (device time, no Python launch
overhead), CUDA events, the L2 cache flushed before every timed run, median of `iters` runs; the activations are
quantized once outside the timed region (the GEMM alone). Candidates that fail to compile or launch, or disagree
with the float32 emulation, are skipped. The first candidate is the untuned heuristic, so a tuned entry is never
slower than it. With --budget-s the tuner stops starting new candidates once the budget is spent, keeps the best
of what the current (shape, M) measured, and writes the table (it is also rewritten after every shape).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from kernels import fp8 as k
from kernels.tuning import open_table, write_table

SMEM_BYTES = 227 * 1024  # H100/H200 shared memory per block (opt-in maximum)

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per M range. Block-scaled tiles keep BLOCK_M * BLOCK_N <=
# 64 * 32 * num_warps (accumulator + one K block's product in registers; 128x256 / 8 warps and 128x128 / 4 warps
# spill on sm_90), the per-row tiles only hold the accumulator.
BLOCK_TILES = {
    16: ((16, 32, 4, 5), (16, 64, 4, 4), (16, 64, 4, 5), (16, 128, 4, 4), (32, 64, 4, 4), (16, 128, 4, 3)),
    128: ((32, 64, 4, 4), (64, 64, 4, 4), (64, 64, 4, 5), (32, 128, 4, 4), (64, 128, 4, 3), (64, 128, 4, 4),
          (128, 64, 4, 4), (128, 128, 8, 3)),
    None: ((64, 128, 4, 3), (64, 128, 4, 4), (64, 128, 4, 5), (128, 128, 8, 3), (128, 128, 8, 4), (128, 64, 4, 4),
           (64, 64, 4, 4), (64, 256, 8, 3)),
}
ROW_TILES = {
    16: ((16, 64, 4, 4), (16, 128, 4, 4), (16, 64, 4, 5), (32, 64, 4, 4), (16, 256, 4, 3), (16, 128, 4, 5)),
    128: ((64, 128, 8, 3), (64, 128, 4, 4), (64, 256, 8, 3), (32, 128, 4, 4), (128, 128, 8, 3), (64, 64, 4, 4),
          (128, 256, 8, 3)),
    None: ((128, 256, 8, 3), (128, 256, 8, 4), (128, 128, 8, 3), (128, 128, 8, 4), (256, 128, 8, 3),
           (128, 128, 4, 4), (64, 256, 8, 4)),
}
GROUP_MS = (8, 32)  # L2 swizzle widths tried on the two best-guess large-M tiles (M > 128)


def _tiles(table: dict, M: int) -> tuple:
    return table[16] if M <= 16 else table[128] if M <= 128 else table[None]


def smem_bytes(cfg: dict, block_k: int) -> int:
    """Shared memory of the pipelined fp8 operand tiles (what decides whether a config launches at all)."""
    return (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * block_k * cfg["num_stages"]


def candidates(M: int, N: int, K: int, block_size: tuple[int, int] | None) -> list[dict]:
    """Configs worth timing for this M (tune_shape times the heuristic default first): at most ~20."""
    block_scaled = block_size is not None
    out = []
    for bm, bn, warps, stages in _tiles(BLOCK_TILES if block_scaled else ROW_TILES, M):
        if bm > max(16, 2 * M) or bn > max(16, 2 * N):
            continue
        for bk in ((block_size[1],) if block_scaled else (128, 64) if M <= 16 else (128,)):
            groups = GROUP_MS if M > 128 and (bm, bn) in ((64, 128), (128, 128), (128, 256)) else (8,)
            for gm in groups:
                cfg = dict(BLOCK_M=bm, BLOCK_N=bn, GROUP_M=gm, num_warps=warps, num_stages=stages)
                if not block_scaled:
                    cfg["BLOCK_K"] = bk
                if smem_bytes(cfg, bk) <= SMEM_BYTES:
                    out.append(cfg)
    return out


# GEMV (M <= 4): (block_n, block_k, num_warps) tiles, each tried at split-K factors that leave 2-16 programs
# per SM, and two pipeline depths.
GEMV_TILES = ((32, 256, 4), (16, 256, 4), (64, 128, 4), (32, 128, 4), (16, 512, 4), (32, 512, 8), (64, 256, 8),
              (16, 128, 2), (8, 512, 4))


def gemv_candidates(M: int, N: int, K: int, sms: int) -> list[dict]:
    """GEMV configs worth timing (tune_shape times the heuristic default first): about 40."""
    out = []
    for bn, bk, warps in GEMV_TILES:
        if M > 1 and bk * bn > 8192:  # one fp32 accumulator tile per row
            continue
        tiles = -(-N // bn)
        for split in (1, 2, 4, 8, 16, 32):
            if split * bk * 2 > K and split > 1:
                break
            if not 2 * sms <= tiles * split <= 16 * sms:
                continue
            for stages in (2, 4):
                out.append(dict(block_n=bn, block_k=bk, split_k=split, num_warps=warps, num_stages=stages))
    return out


def _inputs(M: int, N: int, K: int, block_size, device):
    x = torch.randn(M, K, device=device)
    w = torch.randn(N, K, device=device) * 0.02
    if block_size is not None:
        wq, ws = k.quantize_fp8_block(w, block_size)
        xq, xs = k.quantize_fp8_per_token_group(x, block_size[1])
        return xq, xs, wq, ws
    wq, ws = k.quantize_fp8_per_channel(w)
    xq, xs = k.quantize_fp8_per_token(x)
    return xq, xs, wq, ws


def _time_configs(run, ref, configs, iters, flush, log, deadline) -> list[tuple[float, dict]]:
    """(median ms, config) of each config that runs and agrees with `ref` (bf16 output rounding is ~2e-3);
    `run(config=cfg)` launches one. Stops starting configs past `deadline` (the first is always timed)."""
    from kernels.timing import graph_time_ms

    results = []
    for i, cfg in enumerate(configs):
        if i > 0 and deadline is not None and time.monotonic() > deadline:
            log(f"  time budget spent after {i} of the candidates")
            break
        try:
            err = ((run(config=cfg).float() - ref).norm() / ref.norm()).item()
            if not err < 1e-2:
                log(f"  rejected (rel err {err:.2e}): {cfg}")
                continue
            ms = graph_time_ms(lambda: run(config=cfg), 2, iters, flush)[0]
        except Exception as e:  # a config this GPU/compiler cannot run: skip it
            log(f"  skipped {cfg}: {type(e).__name__}: {str(e)[:120]}")
            continue
        results.append((ms, cfg))
    return results


def tune_gemv(K: int, N: int, m_values, device, iters: int = 15, log=print,
              deadline: float | None = None) -> dict[str, dict]:
    """Best `fp8_gemv_triton` config per M (<= GEMV_MAX_M) for one (K, N), dynamic per-tensor activations (the
    activation quantization is inside the kernel, so it is timed), and torch._scaled_mm's time with its
    activation quantization in the same conditions (`scaled_mm_ms`: fp8_linear's auto takes the faster)."""
    from kernels.timing import graph_time_ms, l2_flush_buffer

    flush = l2_flush_buffer(device)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    table = {}
    for M in (m for m in m_values if m <= k.GEMV_MAX_M):
        if deadline is not None and time.monotonic() > deadline:
            break
        x = torch.randn(M, K, device=device).bfloat16()
        wq, ws = k.quantize_fp8_per_tensor(torch.randn(N, K, device=device) * 0.02)
        ref = k.fp8_linear_ref(*k.quantize_fp8_per_tensor(x), wq, ws, None, torch.float32)
        default = k.default_gemv_config(M, N, K, device, tuned=False)  # the heuristic, not an earlier table's entry
        # _scaled_mm as method=fp8 runs it by default (fast accumulation)
        peer = graph_time_ms(lambda: k.fp8_linear(x, wq, ws, backend="scaled_mm", fast_accum=True), 2, iters,
                             flush)[0]
        run = functools.partial(k.fp8_gemv_triton, x, wq, ws)
        results = _time_configs(run, ref, [default] + gemv_candidates(M, N, K, sms), iters, flush, log, deadline)
        if not results:
            continue
        best_ms, best = min(results, key=lambda r: r[0])
        default_ms = next((ms for ms, c in results if c is default), None)
        gbps = (N * K + M * K * 2 + M * N * 2) / (best_ms * 1e-3) / 1e9
        table[k.gemv_tuning_key(M, N, K)] = dict(best) | {
            "median_ms": round(best_ms, 5), "default_ms": round(default_ms, 5) if default_ms else None,
            "gbps": round(gbps, 1), "scaled_mm_ms": round(peer, 5), "scaled_mm_fast_accum": True}
        log(f"K={K:6d} N={N:6d} M={M:5d} gemv  best {best_ms:.4f} ms ({gbps:.0f} GB/s; default "
            f"{default_ms or float('nan'):.4f}, _scaled_mm {peer:.4f}, {len(results)} timed) {best}")
    return table


def tune_shape(K: int, N: int, m_values, device, block_size: tuple[int, int] | None = (128, 128),
               iters: int = 15, log=print, deadline: float | None = None,
               previous: dict | None = None) -> dict[str, dict]:
    """Best config per M-bucket for one (K, N); stops early (keeping what it measured) past `deadline`. previous:
    the table's entries so far (a Gluon/Triton choice made with their tiles is reported as dropped)."""
    from kernels.timing import l2_flush_buffer

    flush = l2_flush_buffer(device)
    table = {}
    for M in m_values:
        if deadline is not None and time.monotonic() > deadline:
            break
        xq, xs, wq, ws = _inputs(M, N, K, block_size, device)
        ref = k.fp8_linear_ref(xq, xs, wq, ws, None, torch.float32, block_size)
        if block_size is not None:
            run = functools.partial(k.fp8_block_gemm_triton, xq, xs, wq, ws, block_size, out_dtype=torch.bfloat16)
        else:
            run = functools.partial(k.fp8_scaled_gemm_triton, xq, xs, wq, ws, out_dtype=torch.bfloat16)
        default = k.default_gemm_config(M, block_size is not None)
        results = _time_configs(run, ref, [default] + candidates(M, N, K, block_size), iters, flush, log, deadline)
        if not results:
            continue
        best_ms, best = min(results, key=lambda r: r[0])
        default_ms = next((ms for ms, c in results if c is default), None)
        tflops = 2 * M * N * K / (best_ms * 1e-3) / 1e12
        key = k.tuning_key(M, N, K, block_size)
        if (old := (previous or {}).get(key) or {}).get("kernel"):
            log(f"  {key}: the Gluon/Triton choice ({old['kernel']}) was made with the old tiles and is dropped; "
                "run --compare-gluon again")
        table[key] = best | {
            "median_ms": round(best_ms, 5), "default_ms": round(default_ms, 5) if default_ms else None,
            "tflops": round(tflops, 1)}
        log(f"K={K:6d} N={N:6d} M={M:5d} {'block' if block_size else 'rows '} best {best_ms:.4f} ms "
            f"({tflops:.0f} TFLOP/s; default {default_ms or float('nan'):.4f}, {len(results)} timed) {best}")
    return table


def compare_gluon(K: int, N: int, m_values, device, entries: dict, iters: int = 15, log=print,
                  deadline: float | None = None) -> dict[str, dict]:
    """Per M: the Gluon block-scaled GEMM against the Triton one with `entries`' tiles for the key (else the
    heuristic's), both checked against the float32 emulation; the entry gets `kernel` = the faster."""
    from kernels import fp8_gluon
    from kernels.timing import l2_flush_buffer

    flush = l2_flush_buffer(device)
    table = {}
    for M in m_values:
        if deadline is not None and time.monotonic() > deadline:
            break
        xq, xs, wq, ws = _inputs(M, N, K, (128, 128), device)
        why = fp8_gluon.unsupported(xq, wq, (128, 128))
        if why:
            raise SystemExit(f"--compare-gluon: {why}")
        ref = k.fp8_linear_ref(xq, xs, wq, ws, None, torch.float32, (128, 128))
        key = k.tuning_key(M, N, K, (128, 128))
        tiles = {c: v for c, v in (entries.get(key) or k.default_gemm_config(M, True)).items()
                 if c in k.CONFIG_KEYS and c != "kernel"}
        tri = _time_configs(functools.partial(k.fp8_block_gemm_triton, xq, xs, wq, ws, (128, 128),
                                              out_dtype=torch.bfloat16), ref, [tiles], iters, flush, log, None)
        glu = _time_configs(lambda config: fp8_gluon.fp8_block_gemm_gluon(xq, xs, wq, ws), ref, [{}], iters, flush,
                            log, None)
        if not tri:
            continue
        t_ms, g_ms = tri[0][0], glu[0][0] if glu else float("inf")
        table[key] = (entries.get(key) or {}) | tiles | {  # median_ms / tflops stay the Triton tiles' measures
            "kernel": "gluon" if g_ms < t_ms else "triton", "triton_ms": round(t_ms, 5),
            "gluon_ms": round(g_ms, 5) if glu else None}
        log(f"K={K:6d} N={N:6d} M={M:5d} block  triton {t_ms:.4f} ms, gluon {g_ms:.4f} ms: "
            f"{table[key]['kernel']} ({t_ms / g_ms:.2f}x)")
    return table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kernels.fp8_tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="JSON table to write (merged with --merge / an existing file)")
    ap.add_argument("--shapes", nargs="+", required=True, help="KxN pairs (in_features x out_features)")
    ap.add_argument("--m", nargs="+", type=int, default=[16, 128, 1024, 4096])
    ap.add_argument("--kinds", nargs="+", choices=["block", "rows", "gemv"], default=["block", "rows"],
                    help="block: 128x128 block-scaled GEMM; rows: per-tensor/per-row scales; gemv: the one-launch "
                         "W8A8 GEMV (M <= 4)")
    ap.add_argument("--block", type=int, nargs=2, default=[128, 128], metavar=("BN", "BK"))
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting candidates after this many seconds")
    ap.add_argument("--merge", default=None, help="start from this table (e.g. the committed one)")
    ap.add_argument("--compare-gluon", action="store_true",
                    help="block-scaled: time the Gluon GEMM against the table's Triton tiles, record the faster")
    args = ap.parse_args(argv)
    deadline = None if args.budget_s is None else time.monotonic() + args.budget_s
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    if args.compare_gluon and tuple(args.block) != (128, 128):
        raise SystemExit("--compare-gluon: the Gluon GEMM takes 128 x 128 blocks only")
    table = open_table(args.out, args.merge)
    entries = table.setdefault(gpu, {})
    done = False
    for kind in args.kinds:  # the block-scaled GEMM first: it is the one that needs tiles most
        for shape in args.shapes:  # the table is rewritten after each shape: a time-out keeps what was tuned
            K, N = (int(v) for v in shape.lower().split("x"))
            if args.compare_gluon:
                if kind == "block":
                    entries.update(compare_gluon(K, N, args.m, device, entries, args.iters, deadline=deadline))
            elif kind == "gemv":
                entries.update(tune_gemv(K, N, args.m, device, args.iters, deadline=deadline))
            else:
                entries.update(tune_shape(K, N, args.m, device, tuple(args.block) if kind == "block" else None,
                                          args.iters, deadline=deadline, previous=entries))
            torch.cuda.empty_cache()
            write_table(args.out, table)
            if deadline is not None and time.monotonic() > deadline:
                done = True
                break
        if done:
            print(f"time budget of {args.budget_s:.0f} s spent: stopped after {kind} {shape}")
            break
    write_table(args.out, table)
    print(f"wrote {args.out}: {len(entries)} entries for {gpu}")


if __name__ == "__main__":
    main()
