"""FP8 (float8_e4m3fn) quantization and GEMMs: plain-torch reference/emulation, Triton kernels, torch._scaled_mm.

Conventions (as vLLM, llm-compressor and HF `fp8` checkpoints): a scale is a dequantization multiplier,
x ≈ x_q.float() * scale, with scale = max(amax, MIN_AMAX) / 448 (448 = e4m3 max). Values are clamped to
[-448, 448] before the cast (e4m3fn has no inf; a plain cast of a value >= 480 gives NaN in some torch
builds and saturates in others); the amax clamp gives an all-zero tensor a tiny finite scale instead of 0/0.
Scale shapes: per tensor [1]; per token [M, 1]; per channel [N, 1]; block (DeepSeek-V3 `weight_scale_inv`)
[ceil(N/bn), ceil(K/bk)] over bn x bk tiles of the [N, K] weight, edge tiles partial; the matching
activations carry one scale per token per bk columns, [M, ceil(K/bk)].
Under TRITON_INTERPRET=1 (CPU) the quant kernels write the saturated float32 values and torch casts them to
e4m3: the interpreter's own float32 -> e4m3 rounding is wrong (126.4 -> 64). The GEMMs use native FP8 `tl.dot`
both on GPU and interpreted (exact there on triton 3.6 and 3.9), so CPU tests run the GPU code.
"""

from __future__ import annotations

import os

import torch

from kernels.launch import cdiv as _cdiv
from kernels.launch import interpreted as _interpreted
from kernels.launch import use_pdl as _use_pdl
from kernels.splitk import workspace as splitk_workspace
from kernels.tuning import gpu_name as _gpu_name
from kernels.tuning import load_table, lookup, m_bucket
from kernels.tuning import num_sms as _num_sms

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch paths still work
    triton = None

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
MIN_AMAX = 1e-12


def _cast(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def _scale(amax: torch.Tensor) -> torch.Tensor:
    return amax.float().clamp(min=MIN_AMAX) / FP8_MAX


def quantize_fp8_per_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale for the whole tensor: (q, scale[1])."""
    scale = _scale(x.abs().max()).reshape(1)
    return _cast(x, scale), scale


def quantize_fp8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per row of a [M, K] tensor: (q, scale[M, 1])."""
    scale = _scale(x.abs().amax(dim=-1, keepdim=True))
    return _cast(x, scale), scale


def quantize_fp8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per output channel of a [N, K] weight: (q, scale[N, 1])."""
    return quantize_fp8_per_token(w)


def quantize_fp8_static(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Quantize with a given (calibrated) scale, saturating at ±448."""
    return _cast(x, scale.float())


def _pad_to(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, cols - x.shape[1], 0, rows - x.shape[0]))


def quantize_fp8_block(w: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per (bn x bk) tile of a [N, K] weight (edge tiles may be partial): (q, scale[nb, kb])."""
    bn, bk = block
    N, K = w.shape
    nb, kb = _cdiv(N, bn), _cdiv(K, bk)
    tiles = _pad_to(w.float(), nb * bn, kb * bk).reshape(nb, bn, kb, bk)
    scale = _scale(tiles.abs().amax(dim=(1, 3)))
    q = (tiles / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    q = q.reshape(nb * bn, kb * bk)[:N, :K].to(FP8_DTYPE)
    return q, scale


def quantize_fp8_per_token_group(x: torch.Tensor, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per token per `group` consecutive columns of [M, K]: (q, scale[M, ceil(K/group)])."""
    M, K = x.shape
    g = _cdiv(K, group)
    tiles = _pad_to(x.float(), M, g * group).reshape(M, g, group)
    scale = _scale(tiles.abs().amax(dim=-1))
    q = (tiles / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).reshape(M, g * group)[:, :K].to(FP8_DTYPE)
    return q, scale


def dequantize_fp8_block(q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Float32 [N, K] from block-scaled fp8."""
    bn, bk = block
    N, K = q.shape
    full = scale.float().repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:N, :K]
    return q.float() * full


def _dequant_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # scale of one element (per tensor) or one per row ([R], [R, 1])
    s = scale.float()
    return q.float() * (s.reshape(()) if s.numel() == 1 else s.reshape(-1, 1))


def fp8_linear_ref(x_q, x_scale, w_q, w_scale, bias=None, out_dtype=torch.float32, block_size=None):
    """Emulation: dequantize both operands to float32, matmul, add bias. x_q [M, K], w_q [N, K]."""
    if block_size is not None:
        w = dequantize_fp8_block(w_q, w_scale, block_size)
        x = x_q.float() * x_scale.float().repeat_interleave(block_size[1], 1)[:, :x_q.shape[1]]
    else:
        w, x = _dequant_rows(w_q, w_scale), _dequant_rows(x_q, x_scale)
    y = x @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def fp8_supported(device: torch.device | str) -> bool:
    """torch._scaled_mm and Triton's fp8 dot run on CUDA GPUs of compute capability >= 8.9 (Ada, Hopper, newer)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def scaled_mm(x_q, w_q, x_scale, w_scale, bias=None, out_dtype=torch.bfloat16, fast_accum: bool = False
              ) -> torch.Tensor:
    """cuBLASLt FP8 GEMM, x_q [M,K] @ w_q[N,K]^T: per-tensor scales ([1] both) or row-wise (any [M,1]/[N,1]).
    fast_accum: Hopper's FP8 tensor-core accumulator is never promoted to fp32 along K (faster at large M; what
    vLLM's CUTLASS FP8 kernels and torchao's Float8Linear forward use), else cuBLASLt promotes it."""
    M, K = x_q.shape
    N = w_q.shape[0]
    if K % 16 or N % 16:
        raise ValueError(f"torch._scaled_mm needs K and N multiples of 16, got K={K}, N={N}; "
                         "use backend='triton' or 'torch'")
    if x_scale.numel() == 1 and w_scale.numel() == 1:
        b = None if bias is None else bias.to(out_dtype)
        return torch._scaled_mm(x_q, w_q.t(), scale_a=x_scale.float().reshape(()),
                                scale_b=w_scale.float().reshape(()), out_dtype=out_dtype, bias=b,
                                use_fast_accum=fast_accum)
    # Row-wise cuBLASLt wants both scales row-wise, float32, x [M, 1] and w [1, N], and bf16 output.
    xs = x_scale.float().reshape(-1, 1).expand(M, 1).contiguous()
    ws = w_scale.float().reshape(1, -1).expand(1, N).contiguous()
    b = None if bias is None else bias.to(torch.bfloat16)
    return torch._scaled_mm(x_q, w_q.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16, bias=b,
                            use_fast_accum=fast_accum).to(out_dtype)


if triton is not None:
    from kernels.launch import pdl_wait as _pdl_wait
    from kernels.splitk import splitk_store

    @triton.jit
    def _group_quant_kernel(x_ptr, q_ptr, s_ptr, K, G, n_groups, stride_xm, stride_qm,
                            GROUP: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
        # Each program quantizes ROWS (token, group) pairs, r = token * G + g; GROUP = K for per-token scales.
        r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        offs = tl.arange(0, BLOCK)
        row = (r // G).to(tl.int64)
        cols = (r % G)[:, None] * GROUP + offs[None, :]
        mask = (r < n_groups)[:, None] & (cols < K) & (offs < GROUP)[None, :]
        x = tl.load(x_ptr + row[:, None] * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
        scale = tl.maximum(tl.max(tl.abs(x), axis=1), 1e-12) / 448.0
        q = tl.minimum(tl.maximum(x / scale[:, None], -448.0), 448.0)
        tl.store(q_ptr + row[:, None] * stride_qm + cols, q.to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(s_ptr + r, scale, mask=r < n_groups)

    @triton.jit
    def _amax_kernel(x_ptr, amax_ptr, numel, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < numel, other=0.0).to(tl.float32)
        tl.atomic_max(amax_ptr, tl.max(tl.abs(x), axis=0))

    @triton.jit
    def _round_e4m3(v):
        # v (fp32, |v| <= 448) rounded to the nearest e4m3 value, ties to even, in fp32 arithmetic (bit-exact with
        # torch's cast, also under the CPU interpreter, whose own fp8 cast misrounds some values): normal values
        # keep 3 of fp32's 23 mantissa bits (add half an e4m3 ulp minus one, plus the kept lsb, then clear 20
        # bits); below 2^-6 e4m3 is subnormal with a fixed step of 2^-9, which adding and subtracting
        # 1.5 * 2^14 rounds to.
        bits = v.to(tl.int32, bitcast=True)
        normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -0x100000).to(tl.float32, bitcast=True)
        return tl.where(tl.abs(v) < 0.015625, (v + 24576.0) - 24576.0, normal)

    @triton.jit
    def _row_amax(x_ptr, m, M, K, stride_xm, BLOCK: tl.constexpr):
        # amax of row m of x (0 for a padding row m >= M)
        rk = tl.arange(0, BLOCK)
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for k0 in range(0, K, BLOCK):
            k = k0 + rk
            amax = tl.maximum(amax, tl.abs(tl.load(x_ptr + m * stride_xm + k, mask=(k < K) & ((k * 0 + m) < M),
                                                   other=0.0).to(tl.float32)))
        return tl.max(amax, axis=0)

    @triton.jit
    def _gemv_xq(x_ptr, m, M, k, k_ok, stride_xm, xs):
        # row m's activations at columns k, quantized as the quant kernels do (clamp(x / scale), e4m3 rounding)
        x = tl.load(x_ptr + m * stride_xm + k, mask=k_ok & ((k * 0 + m) < M), other=0.0).to(tl.float32)
        return _round_e4m3(tl.minimum(tl.maximum(x / xs, -448.0), 448.0))

    @triton.jit
    def _fp8_gemv_kernel(x_ptr, w_ptr, ws_ptr, xs_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, M, N, K, k_split, split_k,
                         stride_xm, stride_wn, stride_ym, ACT: tl.constexpr, W_PER_CHANNEL: tl.constexpr,
                         HAS_BIAS: tl.constexpr, EMULATE_BF16: tl.constexpr, PDL: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # y [M, N] = (q(x) . w_q^T) * x_scale * w_scale for M <= BLOCK_M <= 4 rows, activations quantized inside
        # the kernel. Program (n-tile, k-slice) first reads x (a few KB, from L2) for the activation scale (ACT
        # 0: dynamic per tensor, 1: static from xs_ptr, 2: dynamic per token), then streams its [BLOCK_N, k_split]
        # slice of w_q [N, K] (K contiguous) once. Each row keeps a 2-D [BLOCK_N, BLOCK_K] fp32 accumulator laid
        # out like the weight tile (a thread adds into its own registers; the sum over K runs once, after the
        # loop); split-K slices meet in the workspace (kernels.splitk), so a decode step's FP8 linear is one
        # launch reading one byte per weight. PDL (programmatic dependent launch): it waits for the kernels before
        # it first (x and the workspace are theirs), then lets the next one launch.
        if PDL:
            _pdl_wait()
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        if ACT == 1:
            xs0 = tl.load(xs_ptr)
            xs1 = xs0
            xs2 = xs0
            xs3 = xs0
        else:
            xs0 = tl.maximum(_row_amax(x_ptr, 0, M, K, stride_xm, 1024), 1e-12)
            xs1 = xs0
            xs2 = xs0
            xs3 = xs0
            if BLOCK_M > 1:
                xs1 = tl.maximum(_row_amax(x_ptr, 1, M, K, stride_xm, 1024), 1e-12)
            if BLOCK_M > 2:
                xs2 = tl.maximum(_row_amax(x_ptr, 2, M, K, stride_xm, 1024), 1e-12)
                xs3 = tl.maximum(_row_amax(x_ptr, 3, M, K, stride_xm, 1024), 1e-12)
            if ACT == 0:
                xs0 = tl.maximum(tl.maximum(xs0, xs1), tl.maximum(xs2, xs3))
                xs1 = xs0
                xs2 = xs0
                xs3 = xs0
            xs0 = xs0 / 448.0
            xs1 = xs1 / 448.0
            xs2 = xs2 / 448.0
            xs3 = xs3 / 448.0
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = rn < N
        rk = tl.arange(0, BLOCK_K)
        acc0 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        acc3 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        k_lo = pid_k * k_split
        k_hi = tl.minimum(K, k_lo + k_split)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            k = k0 + rk
            k_ok = k < k_hi
            w = tl.load(w_ptr + rn[:, None] * stride_wn + k[None, :], mask=n_ok[:, None] & k_ok[None, :],
                        other=0.0, eviction_policy="evict_first").to(tl.float32)
            acc0 += w * _gemv_xq(x_ptr, 0, M, k, k_ok, stride_xm, xs0)[None, :]
            if BLOCK_M > 1:
                acc1 += w * _gemv_xq(x_ptr, 1, M, k, k_ok, stride_xm, xs1)[None, :]
            if BLOCK_M > 2:
                acc2 += w * _gemv_xq(x_ptr, 2, M, k, k_ok, stride_xm, xs2)[None, :]
                acc3 += w * _gemv_xq(x_ptr, 3, M, k, k_ok, stride_xm, xs3)[None, :]
        if W_PER_CHANNEL:
            ws = tl.load(ws_ptr + rn, mask=n_ok, other=0.0)
        else:
            ws = tl.zeros([BLOCK_N], dtype=tl.float32) + tl.load(ws_ptr)
        rm = tl.arange(0, BLOCK_M)
        m_ok = rm < M
        out = (tl.sum(acc0, axis=1) * ws * xs0)[None, :] + tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        if BLOCK_M > 1:
            out = tl.where(rm[:, None] == 1, (tl.sum(acc1, axis=1) * ws * xs1)[None, :], out)
        if BLOCK_M > 2:
            out = tl.where(rm[:, None] == 2, (tl.sum(acc2, axis=1) * ws * xs2)[None, :], out)
            out = tl.where(rm[:, None] == 3, (tl.sum(acc3, axis=1) * ws * xs3)[None, :], out)
        splitk_store(out, rm, rn, m_ok, n_ok, part_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, split_k, HAS_BIAS,
                     EMULATE_BF16)

    @triton.jit
    def _tensor_quant_one_kernel(x_ptr, q_ptr, s_ptr, numel, BLOCK: tl.constexpr):
        # Dynamic per-tensor quantization of a small tensor in one program: amax over x, then the scaled cast
        # (x is re-read from L1/L2). One launch where the general path takes three (zero the amax, amax with
        # atomics, cast): at decode sizes each launch costs more than the bytes.
        offs = tl.arange(0, BLOCK)
        m = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, numel, BLOCK):
            x = tl.load(x_ptr + start + offs, mask=start + offs < numel, other=0.0).to(tl.float32)
            m = tl.maximum(m, tl.abs(x))
        s = tl.maximum(tl.max(m, axis=0), 1e-12) / 448.0
        tl.store(s_ptr, s)
        for start in range(0, numel, BLOCK):
            x = tl.load(x_ptr + start + offs, mask=start + offs < numel, other=0.0).to(tl.float32)
            q = tl.minimum(tl.maximum(x / s, -448.0), 448.0)
            tl.store(q_ptr + start + offs, q.to(q_ptr.dtype.element_ty), mask=start + offs < numel)

    @triton.jit
    def _tensor_quant_kernel(x_ptr, q_ptr, s_ptr, s_out_ptr, numel, FROM_AMAX: tl.constexpr, BLOCK: tl.constexpr):
        # FROM_AMAX: s_ptr holds the tensor's amax (from _amax_kernel); each program derives the scale and
        # program 0 writes it to s_out_ptr.
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        s = tl.load(s_ptr)
        if FROM_AMAX:
            s = tl.maximum(s, 1e-12) / 448.0
            if pid == 0:
                tl.store(s_out_ptr, s)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(x / s, -448.0), 448.0)
        tl.store(q_ptr + offs, q.to(q_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _fp8_gemm_kernel(x_ptr, w_ptr, y_ptr, xs_ptr, ws_ptr, b_ptr, M, N, K,
                         stride_xm, stride_wn, stride_ym, stride_xsm, stride_xsk, stride_wsn, stride_wsk,
                         HAS_BIAS: tl.constexpr, BLOCK_SCALED: tl.constexpr, EVEN_K: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         SCALE_BN: tl.constexpr, GROUP_M: tl.constexpr, INTERP_K_STEPS: tl.constexpr):
        # BLOCK_SCALED: y[m, n] = sum_kb (x_q[m, kb] . w_q[n, kb]) * xs[m, kb] * ws[n // SCALE_BN, kb] with
        # BLOCK_K the scale block; else y = (x_q . w_q) * xs[m] * ws[n] (stride 0 broadcasts a per-tensor scale).
        # Programs walk GROUP_M row tiles down a column of N tiles before moving right (L2 reuse of w tiles).
        pid = tl.program_id(0)
        num_m = tl.cdiv(M, BLOCK_M)
        num_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * num_n
        first_m = (pid // per_group) * GROUP_M
        size_m = min(num_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % size_m
        pid_n = (pid % per_group) // size_m
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        # Rows/columns past the edge read a valid row/column (wrapped), so the operand loads need no M/N mask
        # (only K has one, on an uneven last block); the store is masked.
        rm_in = rm % M
        rn_in = rn % N
        a_ptrs = x_ptr + rm_in[:, None].to(tl.int64) * stride_xm + rk[None, :]
        b_ptrs = w_ptr + rn_in[None, :].to(tl.int64) * stride_wn + rk[:, None]
        xs_ptrs = xs_ptr + rm_in * stride_xsm
        # One weight scale per (N tile, K block) when the tile lies inside one scale block: a scalar load.
        WS_SCALAR: tl.constexpr = BLOCK_SCALED and BLOCK_N <= SCALE_BN and SCALE_BN % BLOCK_N == 0
        if WS_SCALAR:
            ws_ptrs = ws_ptr + ((pid_n * BLOCK_N) // SCALE_BN) * stride_wsn
        else:
            ws_ptrs = ws_ptr + (rn_in // SCALE_BN) * stride_wsn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        # Interpreted, the trip count is a constant: triton 3.6's interpreter cannot range() over a runtime
        # scalar with numpy >= 2.4 (int() of a 1-element array).
        for kb in range(0, INTERP_K_STEPS if INTERP_K_STEPS > 0 else tl.cdiv(K, BLOCK_K)):
            if EVEN_K:
                a = tl.load(a_ptrs)
                b = tl.load(b_ptrs)
            else:
                k_ok = rk < K - kb * BLOCK_K
                a = tl.load(a_ptrs, mask=k_ok[None, :], other=0.0)
                b = tl.load(b_ptrs, mask=k_ok[:, None], other=0.0)
            if BLOCK_SCALED:
                # one multiply per row (scalar weight scale), then one FMA per accumulator element
                xs = tl.load(xs_ptrs + kb * stride_xsk)
                if WS_SCALAR:
                    acc += tl.dot(a, b) * (xs * tl.load(ws_ptrs + kb * stride_wsk))[:, None]
                else:
                    ws = tl.load(ws_ptrs + kb * stride_wsk)
                    acc += tl.dot(a, b) * (xs[:, None] * ws[None, :])
            else:
                acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        if not BLOCK_SCALED:
            xs = tl.load(xs_ptrs)
            ws = tl.load(ws_ptrs)
            acc = acc * xs[:, None] * ws[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn_in).to(tl.float32)[None, :]
        y_ptrs = y_ptr + rm[:, None].to(tl.int64) * stride_ym + rn[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rn < N)[None, :])


def _need_triton(*tensors: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError("Triton is not installed: pip install 'quantbench[gpu]', or use backend='torch'")
    if not _interpreted() and any(not t.is_cuda for t in tensors):
        raise ValueError("Triton FP8 kernels need CUDA tensors (or TRITON_INTERPRET=1 on CPU); "
                         "use backend='torch' for CPU tensors")


def _quant_out(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=torch.float32 if _interpreted() else FP8_DTYPE, device=x.device)


def per_token_group_quant_fp8_triton(x: torch.Tensor, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused Triton amax/scale/saturate/cast, one scale per token per `group_size` columns: (q, scale[M, G])."""
    _need_triton(x)
    x = x.contiguous()
    M, K = x.shape
    G = _cdiv(K, group_size)
    q = _quant_out(x)
    s = torch.empty((M, G), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(group_size)
    rows = max(1, 4096 // block)
    _group_quant_kernel[(triton.cdiv(M * G, rows),)](
        x, q, s, K, G, M * G, x.stride(0), q.stride(0), GROUP=group_size, BLOCK=block, ROWS=rows,
        num_warps=min(max(rows * block // 512, 1), 16))
    return q.to(FP8_DTYPE), s


def per_token_quant_fp8_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused Triton per-token (per-row) dynamic quantization: (q, scale[M, 1])."""
    return per_token_group_quant_fp8_triton(x, group_size=x.shape[-1])


# Up to this many elements dynamic per-tensor quantization runs as one program. H100, Llama-2-7B decode (git
# f37a3d0, 64K elements): batch 1 (4096-11008 elements) 146 -> 160 tok/s, batch 8 (32K) 1023 -> 983 tok/s, one
# SM looping over 32K elements twice being slower than three launches; 16K keeps the batch-1 gain.
ONE_PROGRAM_QUANT_MAX = 16384


def per_tensor_quant_fp8_triton(x: torch.Tensor, scale: torch.Tensor | None = None
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton per-tensor quantization: dynamic (amax pass + cast pass; one program for small x) or static with
    `scale`: (q, scale[1])."""
    _need_triton(x)
    x = x.contiguous()
    block = 4096
    grid = (triton.cdiv(x.numel(), block),)
    q = _quant_out(x)
    if scale is None and x.numel() <= ONE_PROGRAM_QUANT_MAX:
        s = torch.empty(1, dtype=torch.float32, device=x.device)
        _tensor_quant_one_kernel[(1,)](x, q, s, x.numel(), BLOCK=2048, num_warps=8)
    elif scale is None:
        amax = torch.zeros(1, dtype=torch.float32, device=x.device)
        s = torch.empty(1, dtype=torch.float32, device=x.device)
        _amax_kernel[grid](x, amax, x.numel(), BLOCK=block, num_warps=8)
        _tensor_quant_kernel[grid](x, q, amax, s, x.numel(), FROM_AMAX=True, BLOCK=block, num_warps=8)
    else:
        s = scale.float().reshape(1).contiguous()
        _tensor_quant_kernel[grid](x, q, s, s, x.numel(), FROM_AMAX=False, BLOCK=block, num_warps=8)
    return q.to(FP8_DTYPE), s


# Tuned tiles: kernels/tuned/fp8.json, {gpu name: {tuning_key: config}}, written by `python -m kernels.fp8_tune`;
# $QUANTBENCH_FP8_TUNING points at another file. An entry also carries its measurements (median_ms, default_ms,
# tflops, triton_ms, gluon_ms): only CONFIG_KEYS leave the table, and `kernel` stops at `_launch_gemm`.
TUNING_ENV = "QUANTBENCH_FP8_TUNING"
TUNED_FILE = os.path.join(os.path.dirname(__file__), "tuned", "fp8.json")
# "kernel" (block-scaled entries): "gluon" or "triton", the faster of `kernels.fp8_gluon` and the Triton GEMM with
# the entry's tiles as `python -m kernels.fp8_tune --compare-gluon` measured them (fp8_linear's auto takes it).
CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages", "kernel")


def tuning_key(M: int, N: int, K: int, block_size: tuple[int, int] | None) -> str:
    """`N.._K.._b128x128_M..` for the block-scaled GEMM, `N.._K.._rows_M..` for per-tensor/per-row scales."""
    kind = f"b{block_size[0]}x{block_size[1]}" if block_size is not None else "rows"
    return f"N{N}_K{K}_{kind}_M{m_bucket(M)}"


def tuned_config(M: int, N: int, K: int, block_size: tuple[int, int] | None, device) -> dict | None:
    """This GPU's tuned tiles for the shape and M-bucket, or None."""
    key = tuning_key(M, N, K, None if block_size is None else tuple(block_size))
    return lookup(os.environ.get(TUNING_ENV, TUNED_FILE), device, key, CONFIG_KEYS, _gpu_name)


def default_gemm_config(M: int, block_scaled: bool) -> dict:
    """Untuned tiles by batch size (H100 reasoning, triton 3.6). Block-scaled, each K block's product is scaled
    before it joins the accumulator, so a thread holds two fp32 tiles (accumulator + tl.dot result): at most 64
    elements each per thread (BLOCK_M * BLOCK_N <= 64 * 32 * num_warps) keeps it in registers. For M > 128,
    64x128 / 4 warps / 4 stages: ~175 registers and 96 KB of shared memory, so two CTAs share an SM and one's
    scaling FMAs overlap the other's wgmma (128x128 / 8 warps fits only one CTA per SM, whose two warpgroups
    scale in lockstep); it is also what vLLM's tuned H100 tables pick for its block-FP8 Triton GEMM at large M.
    Per-tensor/per-row scales apply once after the loop: 128x256 / 8 warps, the cuBLAS-like tile."""
    if block_scaled:  # BLOCK_K is the scale block's
        bm, bn, warps, stages = (16, 32, 4, 5) if M <= 16 else (64, 64, 4, 4) if M <= 128 else (64, 128, 4, 4)
        return dict(BLOCK_M=bm, BLOCK_N=bn, GROUP_M=8, num_warps=warps, num_stages=stages)
    bm, bn, warps, stages = (16, 64, 4, 4) if M <= 16 else (64, 128, 8, 3) if M <= 128 else (128, 256, 8, 3)
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, GROUP_M=8, num_warps=warps, num_stages=stages)


def _gemm_config(M: int, block_scaled: bool, N: int, K: int, device,
                 block_size: tuple[int, int] | None = None) -> dict:
    """Tiles and launch options: the tuned table's entry for this GPU, shape and M-bucket if there is one (over
    the heuristic default, so a partial entry keeps the default's other keys), else the heuristic default."""
    return default_gemm_config(M, block_scaled) | (
        tuned_config(M, N, K, block_size if block_scaled else None, device) or {})


def _launch_gemm(x_q, w_q, xs, ws, bias, out_dtype, block_scaled, block_k, scale_bn, block_m, block_n, config,
                 block_size=None):
    M, K = x_q.shape
    N = w_q.shape[0]
    cfg = _gemm_config(M, block_scaled, N, K, x_q.device, block_size)
    if block_m is not None:
        cfg["BLOCK_M"] = block_m
    if block_n is not None:
        cfg["BLOCK_N"] = block_n
    cfg.update(config or {})
    cfg.pop("kernel", None)  # the table's choice between this kernel and the Gluon one (`block_gemm_kernel`)
    # Block-scaled, BLOCK_K is the scale block (one K step per scale); per-tensor/per-row it is a tile choice.
    tile_k = cfg.pop("BLOCK_K", block_k)
    block_k = block_k if block_scaled else tile_k
    if _interpreted():
        cfg.pop("num_stages", None)
    x_q, w_q = x_q.contiguous(), w_q.contiguous()
    y = torch.empty((M, N), dtype=out_dtype, device=x_q.device)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    _fp8_gemm_kernel[grid](
        x_q, w_q, y, xs, ws, bias if bias is not None else y, M, N, K,
        x_q.stride(0), w_q.stride(0), y.stride(0), xs.stride(0), xs.stride(1), ws.stride(0), ws.stride(1),
        HAS_BIAS=bias is not None, BLOCK_SCALED=block_scaled, EVEN_K=K % block_k == 0, BLOCK_K=block_k,
        SCALE_BN=scale_bn, INTERP_K_STEPS=triton.cdiv(K, block_k) if _interpreted() else 0, **cfg)
    return y


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def fp8_block_gemm_triton(x_q, x_scale, w_q, w_scale, block_size=(128, 128), bias=None, out_dtype=torch.bfloat16,
                          block_m: int | None = None, block_n: int | None = None, config: dict | None = None
                          ) -> torch.Tensor:
    """Block-scaled FP8 GEMM: x_q [M,K] with per-token-group scales [M, ceil(K/bk)], w_q [N,K] with [nb, kb]."""
    bn, bk = block_size
    M, K = x_q.shape
    N = w_q.shape[0]
    KB, NB = _cdiv(K, bk), _cdiv(N, bn)
    if tuple(x_scale.shape) != (M, KB) or tuple(w_scale.shape) != (NB, KB):
        raise ValueError(f"block fp8 GEMM: scales {tuple(x_scale.shape)}/{tuple(w_scale.shape)} do not match "
                         f"M={M}, N={N}, K={K}, block={tuple(block_size)}; expected ({M}, {KB}) and ({NB}, {KB})")
    if not (_pow2(bk) and bk >= 32 and _pow2(bn)):
        raise ValueError(f"block fp8 GEMM: block {tuple(block_size)} needs powers of two with bk >= 32 "
                         "(one K step per scale block); use backend='torch'")
    _need_triton(x_q, w_q)
    return _launch_gemm(x_q, w_q, x_scale.float().contiguous(), w_scale.float().contiguous(), bias, out_dtype,
                        True, bk, bn, block_m, block_n, config, (bn, bk))


def fp8_scaled_gemm_triton(x_q, x_scale, w_q, w_scale, bias=None, out_dtype=torch.bfloat16,
                           block_m: int | None = None, block_n: int | None = None, config: dict | None = None
                           ) -> torch.Tensor:
    """FP8 GEMM with per-tensor or per-token x scales ([1] / [M,1]) and per-tensor or per-channel w ([1] / [N,1])."""
    M, K = x_q.shape
    N = w_q.shape[0]
    if x_scale.numel() not in (1, M) or w_scale.numel() not in (1, N):
        raise ValueError(f"fp8 scaled GEMM: scales of {x_scale.numel()} and {w_scale.numel()} elements; expected "
                         f"1 or M={M} for x and 1 or N={N} for w (block scales: fp8_block_gemm_triton)")
    _need_triton(x_q, w_q)
    xs = x_scale.float().reshape(-1, 1).expand(M, 1)  # stride 0 when per tensor
    ws = w_scale.float().reshape(-1, 1).expand(N, 1)
    return _launch_gemm(x_q, w_q, xs, ws, bias, out_dtype, False, 128, 1, block_m, block_n, config)


GEMV_MAX_M = 4  # fp8_gemv_triton serves up to this many rows (decode); larger M goes to the GEMMs
GEMV_CONFIG_KEYS = ("block_n", "block_k", "split_k", "num_warps", "num_stages")


def gemv_tuning_key(M: int, N: int, K: int) -> str:
    return f"N{N}_K{K}_gemv_M{m_bucket(M)}"


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def default_gemv_config(M: int, N: int, K: int, device, tuned: bool = True) -> dict:
    """This GPU's tuned GEMV entry (unless tuned=False), else: 32-row x 256-column tiles (128 at M > 1: one fp32
    accumulator [32, 128] per row, 32 registers a thread each at 4 warps), split over K until ~4 programs per SM
    (an H100 needs about 32 KB in flight per SM to stream at HBM speed)."""
    device = torch.device(device)
    entry = lookup(os.environ.get(TUNING_ENV, TUNED_FILE), device, gemv_tuning_key(M, N, K), GEMV_CONFIG_KEYS,
                   _gpu_name) if tuned else None
    if entry is not None:
        return entry
    cfg = dict(block_n=32, block_k=256 if M == 1 else 128, num_warps=4, num_stages=3)
    sms = _num_sms(_index(device)) if device.type == "cuda" else 1
    cfg["split_k"] = max(1, min(_cdiv(4 * sms, _cdiv(N, cfg["block_n"])), K // (2 * cfg["block_k"])))
    return cfg


def gemv_beats_scaled_mm(M: int, N: int, K: int, device) -> bool:
    """True where this GPU's tuned table says the GEMV ran faster than torch._scaled_mm (activation quantization
    included in both; dynamic per-tensor scales, what the tuner times) for this shape and M-bucket:
    `fp8_linear`'s auto backend then takes it for layers of that scheme. Untuned: False."""
    device = torch.device(device)
    if device.type != "cuda" or M < 1:
        return False
    entry = load_table(os.environ.get(TUNING_ENV, TUNED_FILE)).get(_gpu_name(_index(device)), {}).get(
        gemv_tuning_key(M, N, K))
    return bool(entry) and entry.get("scaled_mm_ms") is not None and entry["median_ms"] < entry["scaled_mm_ms"]


def fp8_gemv_triton(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, activation_scheme: str = "dynamic",
                    act_granularity: str = "tensor", input_scale: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
                    config: dict | None = None) -> torch.Tensor:
    """FP8 W8A8 for M <= GEMV_MAX_M rows in one launch: x quantized inside the kernel exactly as
    per_tensor_quant_fp8_triton / per_token_quant_fp8_triton / a static scale would, times per-tensor or
    per-channel fp8 weights [N, K]; fp32 accumulation, split over K with the reduction in the same launch.
    config: block_n, block_k, split_k, num_warps, num_stages over `default_gemv_config` (tuned table, else
    heuristics)."""
    M, K = x.shape
    N = w_q.shape[0]
    if M > GEMV_MAX_M:
        raise ValueError(f"fp8_gemv_triton: M={M} rows; it serves at most {GEMV_MAX_M} (use fp8_linear)")
    if w_scale.numel() not in (1, N):
        raise ValueError(f"fp8_gemv_triton: weight scale of {w_scale.numel()} elements; expected 1 or N={N}")
    _check_activation_scheme(activation_scheme, act_granularity, input_scale, None)
    _need_triton(x, w_q)
    if M == 0:
        return torch.empty((0, N), dtype=out_dtype or x.dtype, device=x.device)
    cfg = default_gemv_config(M, N, K, x.device) | (config or {})
    bn, bk = cfg["block_n"], cfg["block_k"]
    if not (_pow2(bn) and _pow2(bk) and bk >= 16):
        raise ValueError(f"fp8_gemv_triton: block_n={bn}, block_k={bk} must be powers of two (block_k >= 16)")
    act = 1 if activation_scheme == "static" else (2 if act_granularity == "token" else 0)
    x, w_q = x.contiguous(), w_q.contiguous()
    ws = w_scale.float().reshape(-1).contiguous()
    xs = input_scale.float().reshape(1).contiguous() if act == 1 else ws
    out_dtype = out_dtype or x.dtype
    y = torch.empty((M, N), dtype=out_dtype, device=x.device)
    k_split = _cdiv(_cdiv(K, max(1, int(cfg["split_k"]))), bk) * bk  # whole K-blocks per slice
    split = _cdiv(K, k_split)
    tiles = _cdiv(N, bn)
    part, counters = splitk_workspace(x.device, M * N, tiles) if split > 1 else (y, y)
    launch = dict(num_warps=cfg["num_warps"])
    if not _interpreted():
        launch["num_stages"] = cfg["num_stages"]
    pdl = _use_pdl(x.device)
    if pdl:
        launch["launch_pdl"] = True
    _fp8_gemv_kernel[(tiles, split)](
        x, w_q, ws, xs, bias if bias is not None else y, y, part, counters, M, N, K, k_split, split,
        x.stride(0), w_q.stride(0), y.stride(0), ACT=act, W_PER_CHANNEL=ws.numel() > 1, HAS_BIAS=bias is not None,
        EMULATE_BF16=_interpreted() and out_dtype == torch.bfloat16, PDL=pdl, BLOCK_M=triton.next_power_of_2(M),
        BLOCK_N=bn, BLOCK_K=bk, **launch)
    return y


def _check_activation_scheme(activation_scheme, act_granularity, input_scale, block_size) -> None:
    if activation_scheme not in ("dynamic", "static"):
        raise ValueError(f"fp8_linear: activation_scheme={activation_scheme!r}; use 'dynamic' or 'static'")
    if act_granularity not in ("tensor", "token"):
        raise ValueError(f"fp8_linear: act_granularity={act_granularity!r}; use 'tensor' or 'token'")
    if activation_scheme == "static":
        if input_scale is None:
            raise ValueError("fp8_linear: activation_scheme='static' needs input_scale (calibrate, or load it "
                             "from the checkpoint)")
        if block_size is not None or act_granularity != "tensor":
            raise ValueError("fp8_linear: static activation scales are per tensor and block-scaled weights take "
                             "dynamic per-token-group activations; use activation_scheme='dynamic'")


def _quantize_activation(x, activation_scheme, act_granularity, input_scale, block_size, use_triton):
    _check_activation_scheme(activation_scheme, act_granularity, input_scale, block_size)
    if activation_scheme == "static":
        if use_triton:
            return per_tensor_quant_fp8_triton(x, input_scale)
        return quantize_fp8_static(x, input_scale), input_scale.float().reshape(1)
    if block_size is not None:
        if use_triton:
            return per_token_group_quant_fp8_triton(x, block_size[1])
        return quantize_fp8_per_token_group(x, block_size[1])
    if act_granularity == "token":
        return per_token_quant_fp8_triton(x) if use_triton else quantize_fp8_per_token(x)
    return per_tensor_quant_fp8_triton(x) if use_triton else quantize_fp8_per_tensor(x)


# Untuned, the Gluon block-scaled GEMM (kernels.fp8_gluon) serves M >= GLUON_MIN_M: on the H100 it beat the tuned
# Triton GEMM on 23 of the 24 Llama layer/M points at M = 1024 and 4096 (eleventh session); below, its 128 x 256
# tiles without split-K leave SMs idle on the smaller layers (0.43-0.78x of Triton at M = 128-256 on o/down).
GLUON_MIN_M = 1024


def block_gemm_kernel(M: int, x: torch.Tensor, w_q: torch.Tensor, block_size) -> str:
    """'gluon' or 'triton': which block-scaled GEMM fp8_linear's auto runs. The tuned table's choice for this GPU,
    shape and M-bucket where it made one (`kernel`), else the Gluon kernel from GLUON_MIN_M rows; always 'triton'
    where the Gluon kernel cannot run (`fp8_gluon.unsupported`)."""
    from kernels import fp8_gluon

    if fp8_gluon.unsupported(x, w_q, block_size) is not None:
        return "triton"
    entry = tuned_config(M, w_q.shape[0], x.shape[1], tuple(block_size), x.device) or {}
    return entry.get("kernel") or ("gluon" if M >= GLUON_MIN_M else "triton")


def fp8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, *, activation_scheme: str = "dynamic",
               act_granularity: str = "tensor", input_scale: torch.Tensor | None = None,
               block_size: tuple[int, int] | None = None, bias: torch.Tensor | None = None, backend: str = "auto",
               out_dtype: torch.dtype | None = None, fast_accum: bool = False) -> torch.Tensor:
    """y = x @ dequant(w_q)^T (+ bias) for x [M, K], w_q [N, K], activations quantized as the scheme says.

    backend: auto picks the one-launch GEMV at decode sizes where this GPU's tuned table measured it faster than
    torch._scaled_mm (`gemv_beats_scaled_mm`), torch._scaled_mm (per-tensor/row-wise scales on an FP8 GPU, K and
    N multiples of 16),
    for block scales the Gluon or the Triton GEMM (`block_gemm_kernel`: the tuned table's faster for this shape and
    M-bucket, untuned Gluon from GLUON_MIN_M rows on Hopper), the Triton GEMM for other shapes on an FP8 GPU, else
    the float32 emulation ('torch'). 'gluon' asks for the Gluon kernel
    (block scales only; an error says why where it cannot run), 'triton' for the Triton one.
    fast_accum: torch._scaled_mm's use_fast_accum (see `scaled_mm`); the other backends accumulate in fp32.
    """
    if x.dim() != 2 or w_q.dim() != 2 or x.shape[1] != w_q.shape[1]:
        raise ValueError(f"fp8_linear: x {tuple(x.shape)} and weight {tuple(w_q.shape)} do not chain "
                         "([M, K] @ [N, K]^T); flatten leading dims of x first")
    if w_q.dtype != FP8_DTYPE:
        raise ValueError(f"fp8_linear: weight dtype {w_q.dtype}, expected {FP8_DTYPE} (quantize it first)")
    M, K = x.shape
    N = w_q.shape[0]
    if block_size is not None:
        block_size = tuple(block_size)
        want = (_cdiv(N, block_size[0]), _cdiv(K, block_size[1]))
        if tuple(w_scale.shape) != want:
            raise ValueError(f"fp8_linear: block scales {tuple(w_scale.shape)} for weight {(N, K)} and block "
                             f"{block_size}; expected {want}")
    elif w_scale.numel() not in (1, N):
        raise ValueError(f"fp8_linear: weight scale of {w_scale.numel()} elements for N={N}; expected 1 (per tensor)"
                         f" or N (per channel); pass block_size for block scales")
    out_dtype = out_dtype or x.dtype
    gpu = fp8_supported(x.device)
    if backend == "gemv":  # the one-launch GEMV where it applies (up to GEMV_MAX_M rows), auto's choice elsewhere
        if block_size is None and M <= GEMV_MAX_M and triton is not None and (gpu or _interpreted()):
            return fp8_gemv_triton(x, w_q, w_scale, activation_scheme, act_granularity, input_scale, bias, out_dtype)
        backend = "auto"
    if (backend == "auto" and gpu and triton is not None and block_size is None and M <= GEMV_MAX_M
            and activation_scheme == "dynamic" and act_granularity == "tensor" and w_scale.numel() == 1
            and gemv_beats_scaled_mm(M, N, K, x.device)):  # the scheme the table's timings were taken with
        return fp8_gemv_triton(x, w_q, w_scale, activation_scheme, act_granularity, input_scale, bias, out_dtype)
    chosen = backend == "auto"
    if backend == "auto":
        if not gpu or triton is None and block_size is not None:
            backend = "torch"
        elif block_size is None and K % 16 == 0 and N % 16 == 0:
            backend = "scaled_mm"
        elif triton is None:
            backend = "torch"
        else:
            backend = "triton" if block_size is None else block_gemm_kernel(M, x, w_q, block_size)
    if backend not in ("torch", "triton", "gluon", "scaled_mm"):
        raise ValueError(f"fp8_linear: backend={backend!r}; use 'auto', 'gemv', 'torch', 'triton', 'gluon' or "
                         "'scaled_mm'")
    if backend == "gluon" and not chosen:  # auto's choice was checked by block_gemm_kernel
        from kernels import fp8_gluon

        why = "it takes block scales (pass block_size)" if block_size is None else fp8_gluon.unsupported(
            x, w_q, block_size)
        if why:
            raise ValueError(f"fp8_linear: backend='gluon' cannot run here: {why}; use backend='triton'")
    if backend == "scaled_mm":
        if block_size is not None:
            raise ValueError("fp8_linear: torch._scaled_mm takes per-tensor or row-wise scales, not blocks; "
                             "use backend='triton' or 'torch'")
        if not gpu:
            raise ValueError("fp8_linear: torch._scaled_mm needs a CUDA GPU with compute capability >= 8.9; "
                             "use backend='torch'")
    if backend == "triton" and not (gpu or _interpreted()):
        raise ValueError("fp8_linear: the Triton FP8 GEMMs need a CUDA GPU with compute capability >= 8.9 "
                         "(or TRITON_INTERPRET=1 on CPU); use backend='torch'")
    # Triton quantizes x where its kernels can run (CUDA tensors, or the interpreter)
    use_triton_quant = backend != "torch" and triton is not None and (x.is_cuda or _interpreted())
    x_q, x_scale = _quantize_activation(x, activation_scheme, act_granularity, input_scale, block_size,
                                        use_triton_quant)
    if backend == "scaled_mm":
        return scaled_mm(x_q, w_q, x_scale, w_scale, bias, out_dtype, fast_accum)
    if backend == "gluon":
        from kernels import fp8_gluon

        return fp8_gluon.fp8_block_gemm_gluon(x_q, x_scale, w_q, w_scale, bias, out_dtype)
    if backend == "triton":
        if block_size is not None:
            return fp8_block_gemm_triton(x_q, x_scale, w_q, w_scale, block_size, bias, out_dtype)
        return fp8_scaled_gemm_triton(x_q, x_scale, w_q, w_scale, bias, out_dtype)
    return fp8_linear_ref(x_q, x_scale, w_q, w_scale, bias, out_dtype, block_size)


@torch.library.custom_op("quantbench::fp8_linear", mutates_args=())
def fp8_linear_op(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, input_scale: torch.Tensor | None,
                  bias: torch.Tensor | None, activation_scheme: str, act_granularity: str,
                  block_size: list[int] | None, backend: str, out_dtype: torch.dtype, fast_accum: bool = False
                  ) -> torch.Tensor:
    """`fp8_linear` on x [M, K] as one opaque torch op, for torch.compile: traced as a call with a known output
    shape, so a compiled model has no graph breaks in the Python around the quantization and GEMM launches
    (backend choice, tuned-table lookups, Triton grids)."""
    return fp8_linear(x, w_q, w_scale, activation_scheme=activation_scheme, act_granularity=act_granularity,
                      input_scale=input_scale, block_size=tuple(block_size) if block_size else None, bias=bias,
                      backend=backend, out_dtype=out_dtype, fast_accum=fast_accum)


@fp8_linear_op.register_fake
def _fp8_linear_fake(x, w_q, w_scale, input_scale, bias, activation_scheme, act_granularity, block_size, backend,
                     out_dtype, fast_accum=False):
    return x.new_empty((x.shape[0], w_q.shape[0]), dtype=out_dtype)
