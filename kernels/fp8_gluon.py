"""Block-scaled FP8 GEMM for Hopper in Gluon (Triton's explicit-layout dialect, `triton.experimental.gluon`, in
Triton >= 3.6): y = x @ W^T with DeepSeek-V3 block scales (x_q [M, K] e4m3 with xs [M, ceil(K/128)], one scale
per token and 128 columns; w_q [N, K] e4m3 with ws [ceil(N/128), ceil(K/128)], one per 128 x 128 block).

Why Gluon: each 128-column K-block's product must be scaled before it joins the fp32 accumulator, and Triton 3.6
waits for every `tl.dot` whose result feeds anything but the next dot (`kernels.fp8`'s block kernel: 0.52-0.76x of
torch._scaled_mm per tensor on the H100 at M >= 1024). Here, per CTA tile of 128 x 256:

- warp specialisation: a 1-warp TMA loader fills a ring of 4 shared-memory slots (x rows and W rows of one
  K-block) guarded by ready/empty mbarriers; two consumer warpgroups (64 rows each) run independently, so one's
  promotion (acc += t * xs[m] * ws) runs beside the other's wgmmas;
- a consumer loads its 64 x 128 x tile into the wgmma A registers once per K-block and runs two 64 x 128 wgmma
  tiles from it (the tile's two W scale blocks), so shared memory serves x once per 256 columns. Shared-memory
  bandwidth binds an FP8 wgmma GEMM of 128 x 128 tiles (A and B re-read per wgmma plus the TMA fills: ~160 B a
  clock of the SM's 128 at full MMA rate); the 256-column tile needs ~125.

H100 (eleventh session, record 20261128T041425Z, graph-timed beside torch._scaled_mm per tensor in the same run):
0.62-0.82x of it at M = 1024/4096 on the Llama-2-7B/3-8B/3-70B layers (Triton's kernel: 0.52-0.76x); 0.88-1.42x
the Triton kernel there (0.88x: Llama-3-8B qkv at M = 1024); results/h100/README.md. `kernels.fp8_tune
--compare-gluon` records per shape and M which of the two is faster (the 128 x 256 tiles, without split-K, leave
SMs idle on small layers at M <= 512). Wgmma partial sums over one 128-column block use the tensor core's FP8
accumulation, then fp32 (as DeepGEMM).

Gluon kernels do not run under TRITON_INTERPRET; `unsupported` says why a call cannot use this kernel, and
`kernels.fp8.fp8_linear` falls back to the Triton kernel there."""

from __future__ import annotations

import os

import torch

try:
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    # Triton 3.9 renamed the TMA load (the old name raises there)
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
except Exception:  # no Triton, or one without Gluon's Hopper API
    gluon = None

BM, BN, BK = 128, 256, 128  # CTA tile (two 64-row consumers) and the K-block (the scale block)
SLOTS = 4  # shared-memory ring: 4 x (16 KB of x + 32 KB of W)
GROUP_M = 8
# 12 warps at 168 registers fill the register file; the loader gives back all but 24, the consumers take 240 (two
# 64-register accumulators, a 64-register product tile, 16 of A, addresses)
MAXNREG = 168


def unsupported(x_q: torch.Tensor, w_q: torch.Tensor, block_size) -> str | None:
    """None if this kernel can run the GEMM, else why not (for the caller's fallback or error)."""
    if gluon is None:
        return "needs Triton >= 3.6 with Gluon's Hopper API (triton.experimental.gluon)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "Gluon kernels do not run under TRITON_INTERPRET=1"
    if not (x_q.is_cuda and w_q.is_cuda) or torch.cuda.get_device_capability(x_q.device)[0] != 9:
        return "needs a Hopper GPU (sm_90: wgmma and TMA)"
    if tuple(block_size) != (128, 128):
        return f"block {tuple(block_size)}: this kernel takes 128 x 128 blocks"
    if x_q.shape[1] % 16:
        return f"K={x_q.shape[1]} is not a multiple of 16 (TMA rows are 16-byte aligned)"
    return None


if gluon is not None:
    _CONSUMER_REGS = gl.constexpr(240)
    _LOADER_REGS = gl.constexpr(24)

    @gluon.jit
    def _scale(xs_ptr, ws_ptr, blk, rm, m_ok, stride_xsm, ok):
        """xs[m, blk] * ws[n-block, blk] for rows rm of a tile (0 past M, or where `ok` is false: a W scale block
        past N). Loaded per half: one load of xs for both halves measured more spills (116 against 46, triton 3.6)."""
        sx = gl.load(xs_ptr + rm * stride_xsm + blk, mask=m_ok & ok, other=0.0)
        sw = gl.load(ws_ptr + blk, mask=ok, other=0.0)
        return sx * sw

    @gluon.jit
    def _loader(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm,
                stride_wsn, stride_ym, m0, n0, has_bias):
        """1 warp: TMA of each K-block's W rows and the two consumers' 64-row x tiles into the ring slot both
        consumers have released (rows and columns past the tensors' edges arrive as zeros)."""
        for b in range(gl.cdiv(K, 128)):
            slot = b % 4
            mbarrier.wait(empty.index(slot), ((b // 4) & 1) ^ 1)  # a fresh mbarrier counts as released
            bar = ready.index(slot)
            mbarrier.expect(bar, 2 * x_desc.block_type.nbytes + w_desc.block_type.nbytes)
            _tma_load(x_desc, [m0, b * 128], bar, xs.index(2 * slot))
            _tma_load(x_desc, [m0 + 64, b * 128], bar, xs.index(2 * slot + 1))
            _tma_load(w_desc, [n0, b * 128], bar, ws.index(slot))

    @gluon.jit
    def _consume(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm,
                 stride_wsn, stride_ym, m0, n0, has_bias, HALF: gl.constexpr):
        """One consumer warpgroup: rows m0 + 64 HALF .. + 64 of the tile, both 128-column halves. Per K-block: x
        rows into the A registers, then for each half a 64 x 128 wgmma tile (use_acc=False: a fresh product), wait,
        promote into that half's accumulator; the slot is released after the second wait."""
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, 128, 32])
        a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
        rm = m0 + HALF * 64 + gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
        m_ok = rm < M
        nb = gl.cdiv(K, 128)
        ws_lo = ws_ptr + (n0 // 128) * stride_wsn
        hi_ok = n0 + 128 < N  # the tile's second W scale block exists
        acc_lo = gl.zeros([64, 128], gl.float32, mma)
        acc_hi = gl.zeros([64, 128], gl.float32, mma)
        t = gl.zeros([64, 128], gl.float32, mma)
        for b in range(nb):
            slot = b % 4
            s_lo = _scale(xs_ptr, ws_lo, b, rm, m_ok, stride_xsm, b < nb)
            s_hi = _scale(xs_ptr, ws_lo + stride_wsn, b, rm, m_ok, stride_xsm, hi_ok)
            mbarrier.wait(ready.index(slot), (b // 4) & 1)
            a = xs.index(2 * slot + HALF).load(a_l)
            w = ws.index(slot)
            # An 8-bit A cannot pass through the wait's deps; tests/test_kernels_fp8_gluon.py checks the binary for
            # writes to the A registers of a wgmma in flight (kernels.sass.wgmma_a_hazards).
            t = warpgroup_mma(a, w.slice(0, 128).permute((1, 0)), t, use_acc=False, is_async=True)
            t = warpgroup_mma_wait(num_outstanding=0, deps=(t, ))
            acc_lo += t * s_lo[:, None]
            t = warpgroup_mma(a, w.slice(128, 128).permute((1, 0)), t, use_acc=False, is_async=True)
            t = warpgroup_mma_wait(num_outstanding=0, deps=(t, ))
            mbarrier.arrive(empty.index(slot))
            acc_hi += t * s_hi[:, None]
        yn = n0 + gl.arange(0, 128, layout=gl.SliceLayout(0, mma))
        if has_bias:  # (a runtime flag: the partitions take no constexpr arguments on triton 3.6)
            acc_lo += gl.load(b_ptr + yn, mask=yn < N, other=0.0).to(gl.float32)[None, :]
            acc_hi += gl.load(b_ptr + 128 + yn, mask=yn + 128 < N, other=0.0).to(gl.float32)[None, :]
        y_ptrs = y_ptr + rm[:, None].to(gl.int64) * stride_ym + yn[None, :]
        gl.store(y_ptrs, acc_lo.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & (yn < N)[None, :])
        gl.store(y_ptrs + 128, acc_hi.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & (yn + 128 < N)[None, :])

    @gluon.jit
    def _consume0(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm,
                  stride_wsn, stride_ym, m0, n0, has_bias):
        _consume(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm,
                 stride_wsn, stride_ym, m0, n0, has_bias, 0)

    @gluon.jit
    def _consume1(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm,
                  stride_wsn, stride_ym, m0, n0, has_bias):
        _consume(x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm,
                 stride_wsn, stride_ym, m0, n0, has_bias, 1)

    @gluon.jit
    def fp8_block_gemm_kernel(x_desc, w_desc, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm, stride_wsn,
                              stride_ym, has_bias, GROUP_M: gl.constexpr, num_warps: gl.constexpr):
        """One 128 x 256 tile of y per program, tiles in grouped order (GROUP_M row tiles walk down a column of N
        tiles: the W tiles stay in L2). The default partition (num_warps = 4) is consumer 0; workers: consumer 1
        (4 warps) and the loader (1 warp)."""
        xs = gl.allocate_shared_memory(gl.float8e4nv, [8, 64, 128], x_desc.layout)  # slot s: x rows 2s, 2s + 1
        ws = gl.allocate_shared_memory(gl.float8e4nv, [4, 256, 128], w_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(4):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=2)  # one arrival per consumer
        pid = gl.program_id(0)
        num_m = gl.cdiv(M, 128)
        per_group = GROUP_M * gl.cdiv(N, 256)
        first_m = (pid // per_group) * GROUP_M
        size_m = gl.minimum(num_m - first_m, GROUP_M)
        m0 = (first_m + (pid % per_group) % size_m) * 128
        n0 = ((pid % per_group) // size_m) * 256
        args = (x_desc, w_desc, xs, ws, ready, empty, xs_ptr, ws_ptr, y_ptr, b_ptr, M, N, K, stride_xsm,
                stride_wsn, stride_ym, m0, n0, has_bias)
        gl.warp_specialize([(_consume0, args), (_consume1, args), (_loader, args)], [4, 1],
                           [_CONSUMER_REGS, _LOADER_REGS])


def _smem_layout(rows: int):
    return gl.NVMMASharedLayout.get_default_for([rows, 128], gl.float8e4nv)


def fp8_block_gemm_gluon(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                         bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """y = x @ W^T (+ bias) from 128 x 128 block-scaled e4m3 operands: x_q [M, K] with x_scale [M, ceil(K/128)],
    w_q [N, K] with w_scale [ceil(N/128), ceil(K/128)]; raises ValueError naming the problem where the inputs do not
    fit or the kernel cannot run here."""
    why = unsupported(x_q, w_q, (128, 128))
    if why:
        raise ValueError(f"fp8 Gluon block GEMM: {why}; use the Triton kernel (fp8_linear backend='triton')")
    if x_q.dim() != 2 or w_q.dim() != 2 or x_q.shape[1] != w_q.shape[1]:
        raise ValueError(f"fp8 Gluon block GEMM: x {tuple(x_q.shape)} and weight {tuple(w_q.shape)} do not chain "
                         "([M, K] @ [N, K]^T)")
    if x_q.dtype != torch.float8_e4m3fn or w_q.dtype != torch.float8_e4m3fn:
        raise ValueError(f"fp8 Gluon block GEMM: operands {x_q.dtype} / {w_q.dtype}; it reads float8_e4m3fn")
    M, K = x_q.shape
    N = w_q.shape[0]
    kb = -(-K // 128)
    if tuple(x_scale.shape) != (M, kb) or tuple(w_scale.shape) != (-(-N // 128), kb):
        raise ValueError(f"fp8 Gluon block GEMM: scales {tuple(x_scale.shape)} / {tuple(w_scale.shape)} for M={M}, "
                         f"N={N}, K={K}; expected ({M}, {kb}) and ({-(-N // 128)}, {kb})")
    if M == 0 or N == 0:
        return torch.empty((M, N), dtype=out_dtype, device=x_q.device)
    x_q, w_q = x_q.contiguous(), w_q.contiguous()
    xs, ws = x_scale.float().contiguous(), w_scale.float().contiguous()
    y = torch.empty((M, N), dtype=out_dtype, device=x_q.device)
    x_desc = TensorDescriptor.from_tensor(x_q, [64, 128], _smem_layout(64))
    w_desc = TensorDescriptor.from_tensor(w_q, [256, 128], _smem_layout(256))
    grid = (-(-M // BM) * -(-N // BN),)
    fp8_block_gemm_kernel[grid](x_desc, w_desc, xs, ws, y, bias if bias is not None else y, M, N, K, xs.stride(0),
                                ws.stride(0), y.stride(0), int(bias is not None), GROUP_M=GROUP_M, num_warps=4,
                                maxnreg=MAXNREG)
    return y
