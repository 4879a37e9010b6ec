"""Gluon block-FP8 GEMM variants (eleventh session probes; the winner is kernels/fp8_gluon.py). y = x @ W^T with
DeepSeek block scales: x_q [M, K] e4m3 with one scale per token and 128 columns (xs [M, K/128]), w_q [N, K] e4m3
with one scale per 128 x 128 block (ws [N/128, K/128]). N a multiple of BN, K of 256.

- default (`gluon_fp8_block_kernel`): each 128-column K-block's wgmmas write a fresh fp32 tile (two register sets
  in rotation), and `warpgroup_mma_wait(1)` retires the previous block's tile while this block's wgmmas run, so
  its promotion (acc += t * xs[m] * ws) overlaps the tensor cores (Triton's `tl.dot(...) * scale` waits with
  pendings = 0 after every block); x and W tiles stream through a TMA ring (UNROLL blocks an iteration, SLOTS);
- WS=1 (`gluon_fp8_block_ws_kernel`): warp-specialised, a TMA loader warp and two (BM = 128) or three (192)
  consumer warpgroups of 64 rows over ready/empty mbarriers; WS=1 with BN = 256 runs the committed kernel
  (`kernels.fp8_gluon`, x rows in the wgmma A registers for two 128-column halves).

    python3 .ci/gpu/gluon_fp8_probe.py sass [BM BN WARPS]        # CPU: waits, spills, shared memory, loop mix
    python3 .ci/gpu/gluon_fp8_probe.py run [BM BN WARPS [M ...]]  # GPU: against the fp32 reference on Llama
                                                                # shapes, graph-timed beside the tuned Triton
                                                                # block-FP8 GEMM, _scaled_mm per tensor, bf16"""

import os
import re
import sys

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                             warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

SLOTS = 4  # the ring; copies run SLOTS - 1 blocks ahead


@gluon.jit
def _issue(x_desc, w_desc, xs, ws, ready, blk, nb, m0, n0):
    """TMA of K-block `blk` of the x and W tiles into ring slot blk % 4 (nothing past the last block); rows past
    M come back as zeros."""
    ok = blk < nb
    slot = blk % xs.shape[0]
    bar = ready.index(slot)
    mbarrier.expect(bar, x_desc.block_type.nbytes + w_desc.block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(x_desc, [m0, blk * 128], bar, xs.index(slot), pred=ok)
    tma.async_copy_global_to_shared(w_desc, [n0, blk * 128], bar, ws.index(slot), pred=ok)


@gluon.jit
def _grouped_tile(M, N, BM: gl.constexpr, BN: gl.constexpr, GROUP_M: gl.constexpr):
    """(m0, n0) of this program's tile in grouped order: GROUP_M row tiles walk down a column of N tiles (the W tiles
    stay in L2)."""
    pid = gl.program_id(0)
    per_group = GROUP_M * (N // BN)
    first_m = (pid // per_group) * GROUP_M
    size_m = gl.minimum(gl.cdiv(M, BM) - first_m, GROUP_M)
    return (first_m + (pid % per_group) % size_m) * BM, ((pid % per_group) // size_m) * BN


@gluon.jit
def _landed(ready, blk):
    """Wait for K-block `blk`'s tiles, then make them visible to the wgmmas of both warpgroups."""
    mbarrier.wait(ready.index(blk % ready.shape[0]), (blk // ready.shape[0]) & 1)


@gluon.jit
def _scale(xs_ptr, ws_row, blk, nb, rm_s, m_ok_s, stride_xsm):
    """xs[m, blk] * ws[n-block, blk] for the tile's rows (0 past the last block or M)."""
    ok = blk < nb
    sx = gl.load(xs_ptr + rm_s * stride_xsm + blk, mask=m_ok_s & ok, other=0.0)
    sw = gl.load(ws_row + blk, mask=ok, other=0.0)
    return sx * sw


@gluon.jit
def gluon_fp8_block_kernel(x_desc, w_desc, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn, stride_ym,
                           GROUP_M: gl.constexpr, UNROLL: gl.constexpr, SLOTS: gl.constexpr, num_warps: gl.constexpr):
    BM: gl.constexpr = x_desc.block_type.shape[0]
    BN: gl.constexpr = w_desc.block_type.shape[0]
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BN, 32])
    xs = gl.allocate_shared_memory(gl.float8e4nv, [SLOTS, BM, 128], x_desc.layout)
    ws = gl.allocate_shared_memory(gl.float8e4nv, [SLOTS, BN, 128], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(SLOTS):
        mbarrier.init(ready.index(i), count=1)
    m0, n0 = _grouped_tile(M, N, BM, BN, GROUP_M)
    rm_s = m0 + gl.arange(0, BM, layout=gl.SliceLayout(1, mma))
    m_ok_s = rm_s < M
    ws_row = ws_ptr + (n0 // 128) * stride_wsn
    nb = K // 128
    for b in gl.static_range(SLOTS):
        _issue(x_desc, w_desc, xs, ws, ready, b, nb, m0, n0)
    acc = gl.zeros([BM, BN], gl.float32, mma)
    # UNROLL K-blocks an iteration: block j + 1's wgmmas are issued before block j's are waited for, so block j's
    # promotion runs beside them; nothing is in flight across the loop's back edge (ptxas serialises every wgmma
    # of a loop whose retired tile is read while a wgmma issued in an earlier iteration may run).
    # Tiles rotate through two register sets: a block's wgmmas overwrite the tile of the block two before it,
    # already promoted, so no zeros are made (use_acc=False ignores the old values).
    ta = gl.zeros([BM, BN], gl.float32, mma)
    tb = gl.zeros([BM, BN], gl.float32, mma)
    for e in range(0, nb, UNROLL):
        _landed(ready, e)
        cur = warpgroup_mma(xs.index(e % SLOTS), ws.index(e % SLOTS).permute((1, 0)), ta, use_acc=False, is_async=True)
        spare = tb
        for j in gl.static_range(1, UNROLL + 1):
            s = _scale(xs_ptr, ws_row, e + j - 1, nb, rm_s, m_ok_s, stride_xsm)
            if j < UNROLL:
                _landed(ready, e + j)
                nxt = warpgroup_mma(xs.index((e + j) % SLOTS), ws.index((e + j) % SLOTS).permute((1, 0)), spare,
                                    use_acc=False, is_async=True)
                cur = warpgroup_mma_wait(num_outstanding=1, deps=(cur, ))  # block e + j - 1 retired
            else:
                cur = warpgroup_mma_wait(num_outstanding=0, deps=(cur, ))
            gl.thread_barrier()  # ... in both warpgroups (each reads the whole W tile) before its slot is refilled
            _issue(x_desc, w_desc, xs, ws, ready, e + j - 1 + SLOTS, nb, m0, n0)
            acc += cur * s[:, None]
            if j < UNROLL:
                spare = cur
                cur = nxt
        ta = spare
        tb = cur
    for i in gl.static_range(SLOTS):
        mbarrier.invalidate(ready.index(i))
    yn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(0, mma))
    gl.store(y_ptr + rm_s[:, None] * stride_ym + yn[None, :], acc.to(gl.bfloat16), mask=m_ok_s[:, None])


@gluon.jit
def _ws_loader(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn,
               stride_ym, m0, n0):
    """Warp-specialised loader (1 warp): TMA of each K-block's W tile and the consumers' 64-row x tiles into the
    ring slot the consumers have released."""
    slots: gl.constexpr = ws.shape[0]
    nc: gl.constexpr = xs.shape[0] // slots  # consumer warpgroups
    for b in range(K // 128):
        slot = b % slots
        mbarrier.wait(empty.index(slot), ((b // slots) & 1) ^ 1)  # a fresh barrier counts as released
        bar = ready.index(slot)
        mbarrier.expect(bar, nc * x_desc.block_type.nbytes + w_desc.block_type.nbytes)
        for i in gl.static_range(nc):
            tma.async_copy_global_to_shared(x_desc, [m0 + 64 * i, b * 128], bar, xs.index(slot * nc + i))
        tma.async_copy_global_to_shared(w_desc, [n0, b * 128], bar, ws.index(slot))


@gluon.jit
def _ws_consume(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn,
                stride_ym, m0, n0, HALF: gl.constexpr):
    """One consumer warpgroup: rows HALF * 64 .. + 64 of the tile. Each K-block: wgmmas into a fresh tile, wait,
    release the slot, promote (acc += t * xs[m] * ws). The two consumers run independently, so one's promotion
    overlaps the other's wgmmas."""
    BN: gl.constexpr = w_desc.block_type.shape[0]
    slots: gl.constexpr = ws.shape[0]
    nc: gl.constexpr = xs.shape[0] // slots
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 32])
    rm = m0 + HALF * 64 + gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
    m_ok = rm < M
    ws_row = ws_ptr + (n0 // 128) * stride_wsn
    nb = K // 128
    acc = gl.zeros([64, BN], gl.float32, mma)
    t = gl.zeros([64, BN], gl.float32, mma)
    for b in range(nb):
        slot = b % slots
        s = _scale(xs_ptr, ws_row, b, nb, rm, m_ok, stride_xsm)
        mbarrier.wait(ready.index(slot), (b // slots) & 1)
        t = warpgroup_mma(xs.index(slot * nc + HALF), ws.index(slot).permute((1, 0)), t, use_acc=False,
                          is_async=True)
        t = warpgroup_mma_wait(num_outstanding=0, deps=(t, ))
        mbarrier.arrive(empty.index(slot))
        acc += t * s[:, None]
    yn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(0, mma))
    gl.store(y_ptr + rm[:, None] * stride_ym + yn[None, :], acc.to(gl.bfloat16), mask=m_ok[:, None])


@gluon.jit
def _ws_consume1(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn,
                 stride_ym, m0, n0):
    _ws_consume(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn,
                stride_ym, m0, n0, 1)


@gluon.jit
def _ws_consume2(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn,
                 stride_ym, m0, n0):
    _ws_consume(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn,
                stride_ym, m0, n0, 2)


@gluon.jit
def gluon_fp8_block_ws_kernel(x_desc, w_desc, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn, stride_ym,
                              GROUP_M: gl.constexpr, SLOTS: gl.constexpr, NC: gl.constexpr,
                              num_warps: gl.constexpr):
    """Warp-specialised block-FP8 GEMM, a 128 x BN tile: consumer warpgroups 0 (the default partition) and 1 (a
    worker) take 64 rows each, a 1-warp worker loads; ready/empty mbarriers per ring slot, no CTA-wide barrier."""
    BM: gl.constexpr = 64 * NC
    BN: gl.constexpr = w_desc.block_type.shape[0]
    xs = gl.allocate_shared_memory(gl.float8e4nv, [SLOTS * NC, 64, 128], x_desc.layout)
    ws = gl.allocate_shared_memory(gl.float8e4nv, [SLOTS, BN, 128], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(SLOTS):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=BM // 64)  # one arrival per consumer warpgroup
    m0, n0 = _grouped_tile(M, N, BM, BN, GROUP_M)
    args = (x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xsm, stride_wsn, stride_ym,
            m0, n0)
    if NC == 2:
        gl.warp_specialize([(_ws_consume, args + (0, )), (_ws_consume1, args), (_ws_loader, args)], [4, 1],
                           [232, 24])
    else:  # 192 rows, three consumers
        gl.warp_specialize([(_ws_consume, args + (0, )), (_ws_consume1, args), (_ws_consume2, args),
                            (_ws_loader, args)], [4, 4, 1], [160, 160, 24])


def _layout(rows: int):
    return gl.NVMMASharedLayout.get_default_for([rows, 128], gl.float8e4nv)


def compiled(bm: int, bn: int, warps: int):
    from kernels.sass import build

    if os.environ.get("WS") and bn == 256:
        raise SystemExit("the 256-column warp-specialised variant is kernels/fp8_gluon.py: python -m kernels.sass "
                         "fp8-gluon")

    if os.environ.get("WS"):
        desc = lambda rows: f"tensordesc<fp8e4nv[{rows}, 128],{_layout(rows)!r}>"  # noqa: E731
        sig = {"x_desc": desc(64), "w_desc": desc(bn), "xs_ptr": "*fp32", "ws_ptr": "*fp32", "y_ptr": "*bf16",
               "M": "i32", "N": "i32", "K": "i32", "stride_xsm": "i32", "stride_wsn": "i32", "stride_ym": "i32"}
        return build(gluon_fp8_block_ws_kernel, sig, {"GROUP_M": 8, "SLOTS": int(os.environ.get("SLOTS", 4)),
                                                      "NC": bm // 64, "num_warps": 4},
                     ("xs_ptr", "ws_ptr", "y_ptr", "N", "K", "stride_ym"), 4, maxnreg=168 if bm == 128 else 128)

    desc = lambda rows: f"tensordesc<fp8e4nv[{rows}, 128],{_layout(rows)!r}>"  # noqa: E731
    sig = {"x_desc": desc(bm), "w_desc": desc(bn), "xs_ptr": "*fp32", "ws_ptr": "*fp32", "y_ptr": "*bf16",
           "M": "i32", "N": "i32", "K": "i32", "stride_xsm": "i32", "stride_wsn": "i32", "stride_ym": "i32"}
    return build(gluon_fp8_block_kernel, sig, {"GROUP_M": 8, "UNROLL": int(os.environ.get("UNROLL", 2)),
                                                 "SLOTS": int(os.environ.get("SLOTS", 4)), "num_warps": warps},
                 ("xs_ptr", "ws_ptr", "y_ptr", "N", "K", "stride_ym"), warps)


def launch(xq, wq, xs, ws, y, bm=128, bn=128, warps=8, unroll=int(os.environ.get("UNROLL", 2)),
           slots=int(os.environ.get("SLOTS", 4))):
    """y from the variant the arguments name (WS=1 with BN = 256: the committed kernel, kernels.fp8_gluon, which
    returns a new tensor)."""
    M, K = xq.shape
    N = wq.shape[0]
    if os.environ.get("WS") and bn == 256:
        from kernels import fp8_gluon

        return fp8_gluon.fp8_block_gemm_gluon(xq, xs, wq, ws)
    w_desc = TensorDescriptor.from_tensor(wq, [bn, 128], _layout(bn))
    if os.environ.get("WS"):
        x_desc = TensorDescriptor.from_tensor(xq, [64, 128], _layout(64))
        gluon_fp8_block_ws_kernel[(triton.cdiv(M, bm) * (N // bn),)](
            x_desc, w_desc, xs, ws, y, M, N, K, xs.stride(0), ws.stride(0), y.stride(0), GROUP_M=8, SLOTS=slots,
            NC=bm // 64, num_warps=4, maxnreg=168 if bm == 128 else 128)
        return y
    x_desc = TensorDescriptor.from_tensor(xq, [bm, 128], _layout(bm))
    gluon_fp8_block_kernel[(triton.cdiv(M, bm) * (N // bn),)](
        x_desc, w_desc, xs, ws, y, M, N, K, xs.stride(0), ws.stride(0), y.stride(0), GROUP_M=8,
        UNROLL=unroll, SLOTS=slots, num_warps=warps)
    return y


def main(argv) -> None:
    bm, bn, warps = (int(v) for v in (argv[1:4] or (128, 128, 8)))
    m_values = [int(v) for v in argv[4:]] or [1024, 4096]
    if argv[0] == "sass":
        from kernels.sass import disassemble, loop_mix, opcodes

        c = compiled(bm, bn, warps)
        text = disassemble(c.asm["cubin"])
        ops, loop = opcodes(text.splitlines()), loop_mix(text)
        waits = sorted(set(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", text)))
        print(f"{bm} x {bn} / {warps} warps: waits {waits}, spills {ops['STL'] + ops['LDL']}, registers "
              f"{c.metadata.num_regs if hasattr(c.metadata, 'num_regs') else '?'}, shared memory "
              f"{c.metadata.shared} B, loop {sum(loop.values())} instructions: QGMMA {loop['QGMMA']}, "
              f"FFMA {loop['FFMA']}, FMUL {loop['FMUL']}, LDGSTS {loop['LDGSTS']}, BAR {loop['BAR']}, "
              f"LDG {loop['LDG']}")
        return
    import torch

    from kernels import fp8 as k
    from kernels.timing import interleaved_time_ms, l2_flush_buffer

    dev = torch.device("cuda")
    flush = l2_flush_buffer(dev)
    for K, N in ((8192, 57344), (8192, 10240), (28672, 8192), (4096, 28672)):
        w = torch.randn(N, K, device=dev) * 0.02
        wq, wsc = k.quantize_fp8_block(w, (128, 128))
        wsc = wsc.float().contiguous()
        wb = w.bfloat16()
        wt, wts = k.quantize_fp8_per_tensor(w)
        for M in m_values:
            x = torch.randn(M, K, device=dev).bfloat16()
            xq, xsc = k.per_token_group_quant_fp8_triton(x, 128)
            ref = k.fp8_linear_ref(xq, xsc, wq, wsc, out_dtype=torch.float32, block_size=(128, 128))
            y = torch.empty(M, N, device=dev, dtype=torch.bfloat16)
            worst = 0.0
            for _ in range(10):
                y.fill_(float("nan"))
                out = launch(xq, wq, xsc, wsc, y, bm, bn, warps)
                err = float(((out.float() - ref).abs().max() / ref.abs().max()))
                worst = err if err != err or err > worst else worst
            tri = k.fp8_block_gemm_triton(xq, xsc, wq, wsc, (128, 128)).float()
            err_tri = float((tri - ref).abs().max() / ref.abs().max())
            xt, xts = k.quantize_fp8_per_tensor(x.float())
            peers = [lambda: launch(xq, wq, xsc, wsc, y, bm, bn, warps),
                     lambda: k.fp8_block_gemm_triton(xq, xsc, wq, wsc, (128, 128)),
                     lambda: torch._scaled_mm(xt, wt.t(), xts, wts, out_dtype=torch.bfloat16),
                     lambda: x @ wb.t()]
            t = interleaved_time_ms(peers, 3, 20, flush)
            fl = 2 * M * N * K / 1e9
            ok = worst == worst and worst < 2 * err_tri + 1e-3
            print(f"K={K} N={N} M={M}: {'PASS' if ok else 'FAIL'} max err / max |ref| {worst:.1e} (Triton "
                  f"{err_tri:.1e}); gluon {t[0][0] * 1e3:.1f} us ({fl / t[0][0]:.0f} TFLOP/s), Triton block "
                  f"{t[1][0] * 1e3:.1f} ({fl / t[1][0]:.0f}), _scaled_mm tensor {t[2][0] * 1e3:.1f} "
                  f"({fl / t[2][0]:.0f}), bf16 {t[3][0] * 1e3:.1f}; gluon / _scaled_mm "
                  f"{t[2][0] / t[0][0]:.2f}x, Triton / _scaled_mm {t[2][0] / t[1][0]:.2f}x", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
