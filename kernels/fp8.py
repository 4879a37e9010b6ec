"""FP8 (float8_e4m3fn) quantization and GEMMs: plain-torch reference/emulation, Triton kernels, torch._scaled_mm.

Conventions (as vLLM, llm-compressor and HF `fp8` checkpoints): a scale is a dequantization multiplier,
x ≈ x_q.float() * scale, with scale = amax / 448 (448 = e4m3 max). Values are clamped to [-448, 448] before
the cast (casting a larger value to e4m3fn gives NaN, not saturation), and amax is clamped below by
MIN_AMAX so an all-zero tensor gets a tiny finite scale instead of 0/0.
Block scales (DeepSeek-V3 `weight_scale_inv`, shape [ceil(N/bn), ceil(K/bk)]) cover bn x bk tiles of the
[N, K] weight; the matching activations carry one scale per token per 128-column group ([M, ceil(K/128)]).
"""

from __future__ import annotations

import os

import torch

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
    nb, kb = -(-N // bn), -(-K // bk)
    tiles = _pad_to(w.float(), nb * bn, kb * bk).reshape(nb, bn, kb, bk)
    scale = _scale(tiles.abs().amax(dim=(1, 3)))
    q = (tiles / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    q = q.reshape(nb * bn, kb * bk)[:N, :K].to(FP8_DTYPE)
    return q, scale


def quantize_fp8_per_token_group(x: torch.Tensor, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per token per `group` consecutive columns of [M, K]: (q, scale[M, ceil(K/group)])."""
    M, K = x.shape
    g = -(-K // group)
    tiles = _pad_to(x.float(), M, g * group).reshape(M, g, group)
    scale = _scale(tiles.abs().amax(dim=-1))
    q = (tiles / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).reshape(M, g * group)[:, :K].to(FP8_DTYPE)
    return q, scale


def dequantize_fp8_block(q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Float32 [N, K] from block-scaled fp8."""
    bn, bk = block
    N, K = q.shape
    full = scale.repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:N, :K]
    return q.float() * full


def fp8_linear_ref(x_q, x_scale, w_q, w_scale, bias=None, out_dtype=torch.float32, block_size=None):
    """Emulation: dequantize both operands to float32, matmul, add bias. x_q [M, K], w_q [N, K]."""
    if block_size is not None:
        w = dequantize_fp8_block(w_q, w_scale, block_size)
        g = block_size[1]
        x = x_q.float() * x_scale.float().repeat_interleave(g, 1)[:, :x_q.shape[1]]
    else:
        w = w_q.float() * w_scale.float().reshape(-1, 1) if w_scale.numel() > 1 else w_q.float() * w_scale.float()
        x = x_q.float() * x_scale.float().reshape(-1, 1) if x_scale.numel() > 1 else x_q.float() * x_scale.float()
    y = x @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def fp8_supported(device: torch.device | str) -> bool:
    """torch._scaled_mm runs FP8 on CUDA GPUs of compute capability >= 8.9 (Ada, Hopper and newer)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def scaled_mm(x_q, w_q, x_scale, w_scale, bias=None, out_dtype=torch.bfloat16) -> torch.Tensor:
    """cuBLASLt FP8 GEMM: per-tensor (scales of one element) or row-wise (x [M,1], w [N,1], bf16 out)."""
    M, K = x_q.shape
    N = w_q.shape[0]
    if K % 16 or N % 16:
        raise ValueError(f"torch._scaled_mm needs K and N multiples of 16, got K={K}, N={N}; use backend=triton")
    rowwise = x_scale.numel() > 1 or w_scale.numel() > 1
    xs = x_scale.float().reshape(M, 1) if rowwise else x_scale.float().reshape(())
    ws = w_scale.float().reshape(1, N) if rowwise else w_scale.float().reshape(())
    if rowwise:
        xs = xs.expand(M, 1).contiguous()
        ws = ws.expand(1, N).contiguous()
        out = torch._scaled_mm(x_q, w_q.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16,
                               bias=None if bias is None else bias.to(torch.bfloat16))
        return out.to(out_dtype)
    return torch._scaled_mm(x_q, w_q.t(), scale_a=xs, scale_b=ws, out_dtype=out_dtype,
                            bias=None if bias is None else bias.to(out_dtype))


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if triton is not None:

    @triton.jit
    def _per_token_group_quant_kernel(x_ptr, q_ptr, s_ptr, K, G, stride_xm, stride_qm,
                                      GROUP: tl.constexpr, BLOCK: tl.constexpr):
        # One program per (row, group of GROUP columns); GROUP = K rounded up for plain per-token scales.
        row = tl.program_id(0)
        g = tl.program_id(1)
        cols = g * GROUP + tl.arange(0, BLOCK)
        mask = (cols < K) & (tl.arange(0, BLOCK) < GROUP)
        x = tl.load(x_ptr + row * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
        amax = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12)
        scale = amax / 448.0
        q = tl.minimum(tl.maximum(x / scale, -448.0), 448.0)
        tl.store(q_ptr + row * stride_qm + cols, q.to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(s_ptr + row * G + g, scale)

    @triton.jit
    def _block_fp8_gemm_kernel(x_ptr, w_ptr, y_ptr, xs_ptr, ws_ptr, b_ptr, M, N, K, KB,
                               stride_xm, stride_wn, stride_ym, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                               SCALE_BN: tl.constexpr):
        # y[m, n] = sum_kb (x_q[m, kb-block] . w_q[n, kb-block]) * xs[m, kb] * ws[n // SCALE_BN, kb]
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kb in range(0, KB):
            k = kb * BLOCK_K + rk
            a = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K),
                        other=0.0)
            b = tl.load(w_ptr + rn[None, :] * stride_wn + k[:, None], mask=(rn[None, :] < N) & (k[:, None] < K),
                        other=0.0)
            if UPCAST:  # the CPU interpreter has no fp8 dot
                part = tl.dot(a.to(tl.float32), b.to(tl.float32))
            else:
                part = tl.dot(a, b)
            xs = tl.load(xs_ptr + rm * KB + kb, mask=rm < M, other=0.0)
            ws = tl.load(ws_ptr + (rn // SCALE_BN) * KB + kb, mask=rn < N, other=0.0)
            acc += part * xs[:, None] * ws[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


def _need_triton():
    if triton is None:
        raise RuntimeError("Triton is not installed: pip install 'quantbench[gpu]' or use backend=torch")


def per_token_group_quant_fp8_triton(x: torch.Tensor, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused Triton amax/scale/saturate/cast, one scale per token per `group_size` columns."""
    _need_triton()
    x = x.contiguous()
    M, K = x.shape
    G = -(-K // group_size)
    # Triton 3.9's CPU interpreter rounds float32 -> e4m3 wrongly where rounding crosses a power of two
    # (126.4 -> 64): interpreted, the kernel writes the saturated float32 values and torch casts them.
    q = torch.empty((M, K), dtype=torch.float32 if _interpreted() else FP8_DTYPE, device=x.device)
    s = torch.empty((M, G), dtype=torch.float32, device=x.device)
    _per_token_group_quant_kernel[(M, G)](x, q, s, K, G, x.stride(0), q.stride(0), GROUP=group_size,
                                          BLOCK=triton.next_power_of_2(group_size))
    return q.to(FP8_DTYPE), s


def per_token_quant_fp8_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused Triton per-token (per-row) dynamic quantization: (q, scale[M, 1])."""
    return per_token_group_quant_fp8_triton(x, group_size=x.shape[-1])


def fp8_block_gemm_triton(x_q, x_scale, w_q, w_scale, block_size=(128, 128), bias=None, out_dtype=torch.bfloat16,
                          block_m: int | None = None, block_n: int = 128) -> torch.Tensor:
    """Block-scaled FP8 GEMM: x_q [M,K] with per-token-group scales [M, ceil(K/bk)], w_q [N,K] with [nb, kb]."""
    _need_triton()
    bn, bk = block_size
    M, K = x_q.shape
    N = w_q.shape[0]
    KB = -(-K // bk)
    if x_scale.shape != (M, KB) or w_scale.shape != (-(-N // bn), KB):
        raise ValueError(f"block fp8 GEMM: scales {tuple(x_scale.shape)}/{tuple(w_scale.shape)} do not match "
                         f"M={M}, N={N}, K={K}, block={block_size}; expected ({M}, {KB}) and ({-(-N // bn)}, {KB})")
    if bn % block_n and block_n % bn:
        raise ValueError(f"block fp8 GEMM: weight block rows {bn} and tile {block_n} must divide one another")
    block_n = min(block_n, bn)
    block_m = block_m or (16 if M <= 16 else 64 if M <= 64 else 128)
    y = torch.empty((M, N), dtype=out_dtype, device=x_q.device)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    _block_fp8_gemm_kernel[grid](
        x_q, w_q, y, x_scale.float().contiguous(), w_scale.float().contiguous(), bias if bias is not None else y,
        M, N, K, KB, x_q.stride(0), w_q.stride(0), y.stride(0), HAS_BIAS=bias is not None, UPCAST=_interpreted(),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=bk, SCALE_BN=bn)
    return y


def _quantize_activation(x, activation_scheme, act_granularity, input_scale, block_size, use_triton):
    if block_size is not None:
        if use_triton:
            return per_token_group_quant_fp8_triton(x, block_size[1])
        return quantize_fp8_per_token_group(x, block_size[1])
    if activation_scheme == "static":
        if input_scale is None:
            raise ValueError("fp8 static activation scheme needs input_scale (calibrate, or load it from the "
                             "checkpoint)")
        return quantize_fp8_static(x, input_scale), input_scale.float().reshape(1)
    if act_granularity == "token":
        return per_token_quant_fp8_triton(x) if use_triton else quantize_fp8_per_token(x)
    return quantize_fp8_per_tensor(x)


def fp8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, *, activation_scheme: str = "dynamic",
               act_granularity: str = "tensor", input_scale: torch.Tensor | None = None,
               block_size: tuple[int, int] | None = None, bias: torch.Tensor | None = None, backend: str = "auto",
               out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """y = x @ dequant(w_q)^T (+ bias) with activations quantized to fp8 as the scheme says.

    backend: auto picks torch._scaled_mm (per-tensor/row-wise on FP8 GPUs), the Triton block GEMM (block
    scales on GPU), or the float32 emulation (CPU, or anything else); torch/triton/scaled_mm force one.
    """
    if x.dim() != 2 or w_q.dim() != 2 or x.shape[1] != w_q.shape[1]:
        raise ValueError(f"fp8_linear: x {tuple(x.shape)} and weight {tuple(w_q.shape)} do not chain ([M,K] @ [N,K]^T)")
    if w_q.dtype != FP8_DTYPE:
        raise ValueError(f"fp8_linear: weight dtype {w_q.dtype}, expected {FP8_DTYPE}")
    out_dtype = out_dtype or x.dtype
    on_gpu = x.is_cuda
    if backend == "auto":
        if not on_gpu:
            backend = "torch"
        elif block_size is not None:
            backend = "triton" if triton is not None else "torch"
        elif fp8_supported(x.device) and x.shape[1] % 16 == 0 and w_q.shape[0] % 16 == 0:
            backend = "scaled_mm"
        else:
            backend = "torch"
    if backend not in ("torch", "triton", "scaled_mm"):
        raise ValueError(f"fp8_linear: backend={backend!r}; use auto, torch, triton or scaled_mm")
    if backend == "scaled_mm" and block_size is not None:
        raise ValueError("fp8_linear: torch._scaled_mm takes per-tensor or row-wise scales, not blocks; "
                         "use backend=triton or torch")
    if backend == "triton" and block_size is None:
        raise ValueError("fp8_linear: the Triton FP8 GEMM serves block-scaled weights; use scaled_mm or torch")
    use_triton_quant = backend != "torch" and triton is not None and (on_gpu or _interpreted())
    x_q, x_scale = _quantize_activation(x, activation_scheme, act_granularity, input_scale, block_size,
                                        use_triton_quant)
    if backend == "scaled_mm":
        if not fp8_supported(x.device):
            raise ValueError("fp8_linear: torch._scaled_mm needs a CUDA GPU with compute capability >= 8.9")
        return scaled_mm(x_q, w_q, x_scale, w_scale, bias, out_dtype)
    if backend == "triton":
        return fp8_block_gemm_triton(x_q, x_scale, w_q, w_scale, block_size, bias, out_dtype)
    return fp8_linear_ref(x_q, x_scale, w_q, w_scale, bias, out_dtype, block_size)
