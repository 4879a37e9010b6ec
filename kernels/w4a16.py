"""W4A16 / W8A16 GEMM with fused dequantisation (GPTQ- and AWQ-style layers): Triton kernel and torch reference.

    y[M, N] = x[M, K] @ W[K, N] (+ bias[N]),   W[k, n] = q[k, n] * s[g(k), n] - zs[g(k), n]
    g(k) = g_idx[k] (act-order, any group per row) or k // group_size (group_size = -1: one group, per-channel)

Canonical layout (K = in_features, N = out_features, G groups, P = 32 // bits codes per int32 word):

  qweight  int32 [K / P, N]  codes packed along K; word qweight[i, n] holds rows k = P*i .. P*i + P-1 of
                             column n, the lowest bits holding the lowest k (the GPTQ/AutoGPTQ qweight as is):

             bits=4   bit 31                                                    bit 0
                      | k=8i+7 | k=8i+6 | k=8i+5 | k=8i+4 | k=8i+3 | k=8i+2 | k=8i+1 | k=8i+0 |
                        31..28   27..24   23..20   19..16   15..12   11..8    7..4     3..0
             bits=8   |    k=4i+3     |    k=4i+2     |    k=4i+1     |    k=4i+0     |
                           31..24          23..16          15..8            7..0

                             so row k is (qweight[k // P, n] >> (bits * (k % P))) & (2^bits - 1); the word
                             0x76543210 (bits=4) holds codes 0, 1, ..., 7 for rows 8i .. 8i+7. (AWQ packs along
                             N in the order 0,2,4,6,1,3,5,7: unpack it and repack with `pack_int_weights`.)
  scales   float [G, N]      fp16 or bf16 (fp32 accepted)
  zeros    one of three forms; the kernels dequantise with one FMA, q * s - zs, and never unpack qzeros:
           None              symmetric: every zero point is 2^(bits-1), so zs = 2^(bits-1) * s (exact in s's dtype)
                             and nothing is read for it (a symmetric GPTQ layer: 2 bytes a group-column, not 4)
           integer [G, N]    zero-point codes z (uint8, or int16 for 8-bit GPTQ v1's z = 256; `zero_codes`): the
                             kernel computes zs = z * s in fp32, exact (an 11-bit scale times a <= 9-bit zero fits
                             fp32's 24-bit mantissa), so W is the checkpoint's s * (q - z) exactly; 1 byte a
                             group-column, not the 4 of fp32 zs (an asymmetric AWQ/GPTQ layer)
           float [G, N]      zs = z * s pre-multiplied (`premultiply_zeros`). Rounding zs to the storage dtype
                             shifts W by at most |zs| * 2^-11 (fp16) or 2^-8 (bf16): exact for symmetric zeros,
                             <= 0.7% of a step for 4-bit asymmetric fp16; fp32 keeps it exact
  g_idx    int32 [K] or None None: contiguous groups of group_size rows (G = ceil(K / group_size), last may be short).
  bias     float [N] or None

Constraints: bits in {4, 8}; K a multiple of P (8 for 4-bit, 4 for 8-bit; qweight has K * bits / 32 rows); any M and
N; group_size any positive size (or -1), g_idx any group per row. The Triton kernel uses int32 offsets (each tensor
below 2^31 elements) and fp16/bf16/fp32 activations (fp32 goes through tf32 tl.dot on GPU). Per K-block it loads
each word once ([BLOCK_K / P, BLOCK_N]), expands it to [BLOCK_K, BLOCK_N] codes held by the word's thread and
accumulates tl.dot in fp32; split-K (small M) sums partial tiles with fp32 atomics. When s and zs are x's 16-bit
dtype (stored so, or symmetric with s in that dtype), W is dequantized in that dtype without int->float conversion
or fp32 -> fp16 cast: a code OR-ed into the mantissa of a power of two is that power plus the code (fp16 0x6400 | q
= 1024 + q, bf16 0x4300 | q = 128 + q, `_codes_as_half`), two codes per 32-bit LOP3 (`_codes_as_half_pairs`), then
one packed subtraction and one 16-bit FMA q * s - zs (W rounded once; 8-bit codes with bf16 x are made through the
fp32 magic 2^23 and cast exactly, then the same bf16 FMA). Otherwise (fp32 x, or s/zs in another dtype than x: a
bf16 model's layers, whose GPTQ/AWQ scales are fp16, and asymmetric layers, whose zero codes make z * s exact only
in fp32) W is computed in fp32 from fp32 magic codes and cast. The frag path (`_w4a16_frag_kernel`) permutes x's
columns instead, so that each register of a word's codes is already a pair of wgmma's A fragment (layout above
`_frag_pair_dequant`). `swap_ab` (tuned) computes y^T = W^T @ x^T so the
dequantized weights are Hopper's wgmma A operand, which it takes from registers.
"""

from __future__ import annotations

import math
import os

import torch

from kernels.launch import cdiv as _cdiv
from kernels.launch import interpreted as _interpreted
from kernels.launch import use_pdl as _use_pdl
from kernels.splitk import workspace as _splitk_workspace
from kernels.tuning import gpu_name as _gpu_name
from kernels.tuning import lookup, m_bucket
from kernels.tuning import num_sms as _num_sms

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch paths still work
    triton = None

SUPPORTED_BITS = (4, 8)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _per_word(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"w4a16: bits={bits} is not supported; use one of {list(SUPPORTED_BITS)}")
    return 32 // bits


def pack_int_weights(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack codes q [K, N] in [0, 2^bits) into qweight int32 [K * bits / 32, N] (layout in the module docstring)."""
    per = _per_word(bits)
    if q.dim() != 2 or q.shape[0] % per:
        raise ValueError(f"w4a16: cannot pack codes of shape {tuple(q.shape)} into {bits}-bit words: need [K, N] "
                         f"with K a multiple of {per}")
    if q.dtype.is_floating_point or q.dtype == torch.bool:
        raise ValueError(f"w4a16: codes must be an integer tensor, got {q.dtype}")
    c = q.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 2**bits):
        raise ValueError(f"w4a16: codes outside [0, {2**bits - 1}] cannot be packed in {bits} bits")
    K, N = c.shape
    shifts = torch.arange(per, device=c.device, dtype=torch.int64) * bits
    words = (c.reshape(K // per, per, N) << shifts[None, :, None]).sum(1)  # disjoint fields: sum == or
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).contiguous()


def unpack_int_weights(qweight: torch.Tensor, bits: int, K: int) -> torch.Tensor:
    """Inverse of `pack_int_weights`: int32 codes [K, N]."""
    per = _per_word(bits)
    if qweight.dtype != torch.int32 or qweight.dim() != 2 or qweight.shape[0] * per != K:
        raise ValueError(f"w4a16: qweight {tuple(qweight.shape)} {qweight.dtype} does not hold K={K} rows of "
                         f"{bits}-bit codes; expected int32 [{K}/{per}, N]")
    shifts = torch.arange(per, device=qweight.device, dtype=torch.int32) * bits
    q = (qweight[:, None, :] >> shifts[None, :, None]) & (2**bits - 1)  # arithmetic shift; the mask drops sign bits
    return q.reshape(K, qweight.shape[1])


def premultiply_zeros(z: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Integer zero points z [G, N] -> zs = z * s in `dtype` (default: scales' dtype), computed in fp32."""
    return (z.float() * scales.float()).to(dtype or scales.dtype).contiguous()


ZERO_CODE_DTYPES = (torch.uint8, torch.int16)


def zero_codes(z: torch.Tensor, bits: int) -> torch.Tensor | None:
    """Integer zero points z [G, N] -> the kernel's zeros: None when every one is 2^(bits-1) (symmetric: the
    kernel reads none), else codes in the narrowest of uint8 / int16 that holds them."""
    if z.numel() and bool((z == 2 ** (bits - 1)).all()):
        return None
    lo, hi = (int(z.min()), int(z.max())) if z.numel() else (0, 0)
    if lo < 0 or hi > 2**15 - 1:
        raise ValueError(f"w4a16: zero points span [{lo}, {hi}]; expected codes in [0, 2^15)")
    return z.to(torch.uint8 if hi < 256 else torch.int16).contiguous()


def _zeros_mode(zeros) -> int:
    """The kernels' ZMODE: 0 pre-multiplied float zs, 1 integer zero codes, 2 none (symmetric)."""
    if zeros is None:
        return 2
    return 1 if zeros.dtype in ZERO_CODE_DTYPES else 0


def _zs(zeros, scales, bits: int) -> torch.Tensor:
    """zs [G, N] in fp32 for the torch reference, from any of the three zeros forms."""
    if zeros is None:
        return scales.float() * 2 ** (bits - 1)
    return zeros.float() * scales.float() if zeros.dtype in ZERO_CODE_DTYPES else zeros.float()


def _num_groups(K: int, group_size: int) -> int:
    return 1 if group_size == -1 else _cdiv(K, group_size)


def _check(x_k: int, qweight, scales, zeros, g_idx, group_size, bits, bias=None, values: bool = True) -> int:
    """Validate a layer's tensors against K = x_k; returns N. `values` also checks g_idx range and finiteness."""
    per = _per_word(bits)
    if x_k % per:
        raise ValueError(f"w4a16: K={x_k} (x's last dim) must be a multiple of 32/bits = {per}: each int32 of "
                         f"qweight packs {per} rows of {bits}-bit codes")
    if qweight.dtype != torch.int32 or qweight.dim() != 2 or qweight.shape[0] != x_k // per:
        raise ValueError(f"w4a16: qweight {tuple(qweight.shape)} {qweight.dtype} does not match K={x_k}: expected "
                         f"int32 [K * bits / 32 = {x_k // per}, N]")
    N = qweight.shape[1]
    if scales.dim() != 2 or scales.shape[1] != N or scales.dtype not in FLOAT_DTYPES:
        raise ValueError(f"w4a16: scales {tuple(scales.shape)} {scales.dtype}: expected fp16/bf16/fp32 [G, N={N}]")
    if zeros is not None and (zeros.shape != scales.shape or zeros.dtype not in FLOAT_DTYPES + ZERO_CODE_DTYPES):
        raise ValueError(f"w4a16: zeros {tuple(zeros.shape)} {zeros.dtype}: expected {tuple(scales.shape)} like "
                         f"scales, as uint8/int16 zero codes (`zero_codes`) or float pre-multiplied zs = z * s, or "
                         f"None for symmetric 2^(bits-1)")
    G = scales.shape[0]
    if G < 1:
        raise ValueError("w4a16: scales has no groups")
    if g_idx is None:
        if group_size != -1 and group_size < 1:
            raise ValueError(f"w4a16: group_size={group_size}; use a positive size or -1 (per-channel)")
        if G != _num_groups(x_k, group_size):
            raise ValueError(f"w4a16: scales has {G} groups but K={x_k} with group_size={group_size} gives "
                             f"{_num_groups(x_k, group_size)}")
    else:
        if g_idx.dim() != 1 or g_idx.numel() != x_k or g_idx.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"w4a16: g_idx {tuple(g_idx.shape)} {g_idx.dtype}: expected int32 [K={x_k}]")
        if values and (int(g_idx.min()) < 0 or int(g_idx.max()) >= G):
            raise ValueError(f"w4a16: g_idx values must lie in [0, G={G}); got [{int(g_idx.min())}, "
                             f"{int(g_idx.max())}]")
    if bias is not None and (bias.shape != (N,) or bias.dtype not in FLOAT_DTYPES):
        raise ValueError(f"w4a16: bias {tuple(bias.shape)} {bias.dtype}: expected float [N={N}]")
    if values and not (torch.isfinite(scales).all() and (_zeros_mode(zeros) or torch.isfinite(zeros).all())):
        raise ValueError("w4a16: scales or zeros hold NaN/inf")
    if values and _zeros_mode(zeros) == 1 and int(zeros.min()) < 0:
        raise ValueError(f"w4a16: zero codes must be >= 0, got {int(zeros.min())}")
    return N


def _group_index(g_idx, group_size: int, K: int, device) -> torch.Tensor:
    if g_idx is not None:
        return g_idx.long()
    rows = torch.arange(K, device=device)
    return torch.zeros_like(rows) if group_size == -1 else rows // group_size


def _dequant(qweight, scales, zeros, g_idx, group_size: int, bits: int, K: int) -> torch.Tensor:
    g = _group_index(g_idx, group_size, K, qweight.device)
    w = unpack_int_weights(qweight, bits, K).float()
    return w.mul_(scales.float()[g]).sub_(_zs(zeros, scales, bits)[g])


def dequantize_ref(qweight, scales, zeros, g_idx, group_size: int, bits: int, K: int,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W [K, N] = q * s[g] - zs[g], computed in fp32 (plain torch)."""
    _check(K, qweight, scales, zeros, g_idx, group_size, bits)
    return _dequant(qweight, scales, zeros, g_idx, group_size, bits, K).to(dtype)


def interleave_glu(gate: torch.Tensor, up: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """One tensor whose slices along `dim` alternate gate, up (gate 0, up 0, gate 1, up 1, ...): the column
    layout of a gate_up layer that applies its activation in the kernel (glu=True). A 4-bit layer's columns are
    independent (codes pack along K), so its qweight, scales and zeros interleave as they are."""
    if gate.shape != up.shape:
        raise ValueError(f"interleave_glu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ")
    dim = dim % gate.dim()
    return torch.stack([gate, up], dim=dim + 1).flatten(dim, dim + 1)


def glu_ref(y: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of y [..., N] whose columns alternate gate, up; each op in y's dtype, as the unfused
    model computes act_fn(gate_proj(x)) * up_proj(x)."""
    return torch.nn.functional.silu(y[..., 0::2]) * y[..., 1::2]


def w4a16_matmul_ref(x, qweight, scales, zeros, g_idx, group_size: int, bits: int, bias=None, *,
                     validate: bool = True, glu: bool = False) -> torch.Tensor:
    """x [..., K] @ dequantized W (+ bias) in torch; W is rounded to x's dtype as the kernel does, fp32 accumulation.
    glu: then silu(gate) * up of the interleaved columns (`glu_ref`)."""
    if x.dim() < 1 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"w4a16: x {tuple(x.shape)} {x.dtype}: expected fp16/bf16/fp32 [..., K]")
    K = x.shape[-1]
    N = _check(K, qweight, scales, zeros, g_idx, group_size, bits, bias, values=validate)
    w = _dequant(qweight, scales, zeros, g_idx, group_size, bits, K).to(x.dtype).float()
    y = x.reshape(-1, K).float() @ w
    if bias is not None:
        y += bias.float()
    y = y.to(x.dtype).reshape(*x.shape[:-1], N)
    if glu:
        if N % 2:
            raise ValueError(f"w4a16: glu=True needs an even N (interleaved gate and up columns), got N={N}")
        return glu_ref(y)
    return y


if triton is not None:
    # Triton 3.9's CPU interpreter truncates fp32 -> bf16 casts and gets bf16 tl.dot wrong: there (EMULATE_BF16)
    # the kernel rounds to bf16 by hand (_round_to_bf16) and multiplies in fp32, which is what the GPU computes.
    from kernels.launch import pdl_launch_dependents as _pdl_launch_dependents
    from kernels.launch import pdl_wait as _pdl_wait
    from kernels.launch import pdl_wait_only as _pdl_wait_only
    from kernels.launch import prefetch_l2 as _prefetch_l2
    from kernels.splitk import round_to_bf16 as _round_to_bf16
    from kernels.splitk import splitk_store as _splitk_store
    from kernels.splitk import tile_store as _tile_store

    @triton.jit
    def _zero_point(z_ptr, offs, mask, s, ZMODE: tl.constexpr, BITS: tl.constexpr, EMULATE_BF16: tl.constexpr):
        """zs at `offs` of the [G, N] zeros, for the scales s loaded at the same offsets (`_zeros_mode`): 0 the
        stored pre-multiplied floats; 1 integer codes times s in fp32 (exact); 2 symmetric, 2^(BITS-1) * s in s's
        dtype (exact: a power of two), nothing read."""
        Z0: tl.constexpr = 1 << (BITS - 1)
        if ZMODE == 0:
            z = tl.load(z_ptr + offs, mask=mask, other=0.0)
        elif ZMODE == 1:
            z = tl.load(z_ptr + offs, mask=mask, other=0).to(tl.float32) * s.to(tl.float32)
        elif EMULATE_BF16:  # the interpreter holds bf16 as uint16, without bf16 arithmetic
            z = s.to(tl.float32) * Z0
        else:
            z = s * Z0
        return z

    @triton.jit
    def _row_scales(s_ptr, z_ptr, g_ptr, k, k_ok, rn, n_ok, N, group_size, HAS_GIDX: tl.constexpr,
                    ZMODE: tl.constexpr, BITS: tl.constexpr, EMULATE_BF16: tl.constexpr, FP32: tl.constexpr = True):
        """Scale and zs [len(k), len(rn)] for rows k: group g_idx[k] or k // group_size; in fp32 (FP32) or as
        stored."""
        if HAS_GIDX:
            g = tl.load(g_ptr + k, mask=k_ok, other=0)
        else:
            g = k // group_size
        kn_ok = k_ok[:, None] & n_ok[None, :]
        s = tl.load(s_ptr + g[:, None] * N + rn[None, :], mask=kn_ok, other=0.0)
        z = _zero_point(z_ptr, g[:, None] * N + rn[None, :], kn_ok, s, ZMODE, BITS, EMULATE_BF16)
        if FP32:  # one return: triton 3.6 rejects returns of other types even under a constexpr if
            s = s.to(tl.float32)
            z = z.to(tl.float32)
        return s, z

    @triton.jit
    def _expand_codes(words, BITS: tl.constexpr):
        """Words [R, C] -> codes [R, C, P] (int32; [r, c, j] = bits BITS*j .. of words[r, c]), the P codes of a word
        held by the thread that holds the word: built from P code planes with tl.join (which adds an in-thread
        dimension), not a 3-D broadcast (whose default layout spreads the codes over lanes)."""
        M: tl.constexpr = (1 << BITS) - 1
        if BITS == 4:
            # each join adds a last (fastest) dimension: [R, C, 2, 2, 2] indexed (j >> 2, (j >> 1) & 1, j & 1)
            a = tl.join(tl.join(words & M, (words >> 16) & M), tl.join((words >> 8) & M, (words >> 24) & M))
            b = tl.join(tl.join((words >> 4) & M, (words >> 20) & M), tl.join((words >> 12) & M, (words >> 28) & M))
            t = tl.join(a, b)
            return tl.reshape(t, (t.shape[0], t.shape[1], 8))
        else:
            t = tl.join(tl.join(words & M, (words >> 16) & M), tl.join((words >> 8) & M, (words >> 24) & M))  # (j>>1, j&1)
            return tl.reshape(t, (t.shape[0], t.shape[1], 4))

    @triton.jit
    def _fma16(v, s, z, EMULATE_BF16: tl.constexpr):
        """v * s - z in the 16-bit dtype, rounded once; interpreted bf16 (held as uint16, no bf16 arithmetic): in
        fp32, rounded to bf16 by hand."""
        if EMULATE_BF16:
            return _round_to_bf16(tl.fma(v, s.to(tl.float32), -z.to(tl.float32)))
        return tl.fma(v, s, -z)

    @triton.jit
    def _codes_as_half_pairs(words, s, z, BITS: tl.constexpr, DT: tl.constexpr, EMULATE_BF16: tl.constexpr,
                             SCALE: tl.constexpr):
        """Words [R, C] -> codes [R, C, P] in row order j (P = 32 // BITS) as exact DT floats, two per 32-bit op:

            t_j = ((words >> BITS*j) & (mask * 0x10001)) | (magic * 0x10001),   j < P/2

        holds code j in its low and code j + P/2 in its high 16 bits, each OR-ed into the magic of
        `_codes_as_half` (0x6400 fp16, 0x4300 bf16): one shift and one LOP3 per two weights. The halves are
        taken apart with int16 truncations (a 32-bit register already holds both) and joined as [.., P/2, 2],
        the pair of t_j adjacent, so the magic subtraction, and with SCALE the FMA q * s - zs (s, z broadcast
        over [R, C]), run as packed HADD2/HFMA2 on t_j itself; only then are codes permuted into row order."""
        MK: tl.constexpr = ((1 << BITS) - 1) * 0x10001
        if DT == tl.float16:
            MAGIC: tl.constexpr = 0x64006400
        else:
            MAGIC: tl.constexpr = 0x43004300
        if BITS == 4:
            t = tl.join(tl.join((words & MK) | MAGIC, ((words >> 8) & MK) | MAGIC),
                        tl.join(((words >> 4) & MK) | MAGIC, ((words >> 12) & MK) | MAGIC))  # [R, C, 2, 2]: j
            t = tl.reshape(t, (t.shape[0], t.shape[1], 4))
        else:
            t = tl.join((words & MK) | MAGIC, ((words >> 8) & MK) | MAGIC)  # [R, C, 2]: j
        h = tl.join(t.to(tl.int16), (t >> 16).to(tl.int16))  # [R, C, P/2, 2]: code j + P/2 * h
        if DT == tl.float16:
            v = h.to(tl.float16, bitcast=True) - 1024.0
        elif EMULATE_BF16:  # the interpreter holds bf16 as uint16, without bf16 arithmetic: fp32, rounded by hand
            v = h.to(tl.bfloat16, bitcast=True).to(tl.float32) - 128.0
        else:
            v = h.to(tl.bfloat16, bitcast=True) - 128.0
        if SCALE:
            v = _fma16(v, s[:, :, None, None], z[:, :, None, None], EMULATE_BF16)
        return tl.reshape(tl.permute(v, (0, 1, 3, 2)), (t.shape[0], t.shape[1], 32 // BITS))

    @triton.jit
    def _codes_as_half(q, BITS: tl.constexpr, DT: tl.constexpr, EMULATE_BF16: tl.constexpr):
        """Codes q (int32 in [0, 2^BITS)) as exact 16-bit floats of dtype DT, without int->float conversion.

        The bits of a code OR-ed into the mantissa of a power of two 2^e whose mantissa is at least BITS wide,
        read as a float, are exactly 2^e + code (the code's ulp is 1 there); subtracting 2^e is exact too:
          fp16 (1 sign, 5 exponent, 10 mantissa bits): 0x6400 = 2^10 = 1024, ulp 1 up to 2047:
               0x6400 | q  ->  1024 + q   (q < 1024: 4- and 8-bit codes)
          bf16 (1 sign, 8 exponent, 7 mantissa bits): 0x4300 = 2^7 = 128, ulp 1 up to 255:
               0x4300 | q  ->  128 + q    (q < 128: 4-bit codes; 8-bit codes need all 8 significant bits of a
               bf16, no room for a magic exponent: they take the fp32 magic 0x4B000000 = 2^23 and an exact cast)
        In Triton: the int32 value truncated to int16 (its low half; the value is < 2^15), then bitcast."""
        if DT == tl.float16:
            return (q | 0x6400).to(tl.int16).to(tl.float16, bitcast=True) - 1024.0
        elif BITS == 4:
            h = (q | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)
            if EMULATE_BF16:  # the interpreter holds bf16 as uint16 and has no bf16 arithmetic: subtract in fp32
                return h.to(tl.float32) - 128.0
            return h - 128.0
        else:
            h = (q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
            if EMULATE_BF16:
                return h
            return h.to(tl.bfloat16)

    @triton.jit
    def _dequant_half(q, s, z, BITS: tl.constexpr, DT: tl.constexpr, EMULATE_BF16: tl.constexpr):
        """W = q * s - zs in DT (fp16/bf16), one fused multiply-add rounded once (s, zs already in DT, so the
        result is the fp32 reference's W rounded to DT, to within that one rounding). Per weight: the code's
        shift and mask (shared with the OR), the magic OR, one 16-bit subtract and one 16-bit FMA (the 16-bit
        ops pack two weights per HADD2/HFMA2); no I2F, no fp32 -> fp16 F2F. EMULATE_BF16 (interpreter): the
        same in fp32, rounded to bf16 by hand."""
        return _fma16(_codes_as_half(q, BITS, DT, EMULATE_BF16), s, z, EMULATE_BF16)

    @triton.jit
    def _store_tile(acc, rm, rn, m_ok, n_ok, b_ptr, y_ptr, stride_ym, pid_k, HAS_BIAS: tl.constexpr,
                    SPLIT_K: tl.constexpr, EMULATE_BF16: tl.constexpr):
        """A tiled kernel's fp32 tile [BLOCK_M, BLOCK_N] of y: bias added once (by K-slice 0), then stored in y's
        dtype, or with split-K added into the fp32 y the wrapper casts afterwards."""
        if HAS_BIAS:
            if pid_k == 0:
                acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        y_ptrs = y_ptr + rm[:, None] * stride_ym + rn[None, :]
        if SPLIT_K == 1:
            if EMULATE_BF16:
                acc = _round_to_bf16(acc)
            tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
        else:
            tl.atomic_add(y_ptrs, acc, mask=m_ok[:, None] & n_ok[None, :])

    @triton.jit
    def _w4a16_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, g_ptr, b_ptr, y_ptr, M, N, K, group_size, stride_xm, stride_ym,
                      BITS: tl.constexpr, HAS_GIDX: tl.constexpr, ZMODE: tl.constexpr, SCALE_ROW: tl.constexpr,
                      HAS_BIAS: tl.constexpr,
                      SPLIT_K: tl.constexpr, EMULATE_BF16: tl.constexpr, DEQ16: tl.constexpr,
                      SWAP_AB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """Tiles of BLOCK_M x BLOCK_N; per K-block the words [BLOCK_K / P, BLOCK_N] are loaded once and expanded
        to codes [BLOCK_K, BLOCK_N]. DEQ16: W dequantized in x's 16-bit dtype (`_dequant_half`, s and zs stored
        in that dtype), else in fp32 (fp32 magic codes, FMA) and cast. SWAP_AB computes y^T tiles = W^T @ x^T:
        the dequantized weights [BLOCK_N, BLOCK_K] are the A operand (Hopper's wgmma takes A from registers,
        B only from shared memory) and x^T the B operand."""
        P: tl.constexpr = 32 // BITS
        DT: tl.constexpr = x_ptr.dtype.element_ty
        # codes two per 32-bit op (`_codes_as_half_pairs`): fp16 any bits, bf16 4-bit (8-bit codes need fp32 magic)
        PAIRS: tl.constexpr = DEQ16 and (DT == tl.float16 or BITS == 4)
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        pid_k = tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = rm < M
        n_ok = rn < N
        if SWAP_AB:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(pid_k * BLOCK_K, K, SPLIT_K * BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < K
            rw = k0 // P + tl.arange(0, BLOCK_K // P)
            w_ok = rw < K // P
            if SWAP_AB:  # x^T [BK, BM], words^T [BN, BK/P]
                a = tl.load(x_ptr + rm[None, :] * stride_xm + k[:, None], mask=m_ok[None, :] & k_ok[:, None],
                            other=0.0)
                words = tl.load(qw_ptr + rw[None, :] * N + rn[:, None], mask=w_ok[None, :] & n_ok[:, None],
                                other=0)
            else:
                a = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                            other=0.0)
                words = tl.load(qw_ptr + rw[:, None] * N + rn[None, :], mask=w_ok[:, None] & n_ok[None, :],
                                other=0)
            # word i of the block holds rows k0 + P*i + j at bits [BITS*j, BITS*j + BITS): codes [.., .., P] in
            # row order j, held by the word's thread, then [BK/P, BN, P] -> [BK, BN] (or [BN, BK/P, P] -> [BN, BK])
            if SCALE_ROW:  # the whole K-block lies in one group: s, zs [BN]
                g = k0 // group_size
                s = tl.load(s_ptr + g * N + rn, mask=n_ok, other=0.0)
                z = _zero_point(z_ptr, g * N + rn, n_ok, s, ZMODE, BITS, EMULATE_BF16)
                if SWAP_AB:
                    s = s[:, None]
                    z = z[:, None]
                else:
                    s = s[None, :]
                    z = z[None, :]
            else:  # per-row scales [BK, BN] (or [BN, BK])
                s, z = _row_scales(s_ptr, z_ptr, g_ptr, k, k_ok, rn, n_ok, N, group_size, HAS_GIDX, ZMODE, BITS,
                                   EMULATE_BF16, not DEQ16)
                if SWAP_AB:
                    s = tl.trans(s)
                    z = tl.trans(z)
            if PAIRS:
                c = _codes_as_half_pairs(words, s, z, BITS, DT, EMULATE_BF16, SCALE_ROW)
            else:
                c = _expand_codes(words, BITS)
            if SWAP_AB:
                c = tl.reshape(c, (BLOCK_N, BLOCK_K))
            else:
                c = tl.reshape(tl.permute(c, (0, 2, 1)), (BLOCK_K, BLOCK_N))
            if PAIRS:
                w = c if SCALE_ROW else _fma16(c, s, z, EMULATE_BF16)
            elif DEQ16:
                w = _dequant_half(c, s, z, BITS, DT, EMULATE_BF16)
            else:  # fp32 (fp32 x, or s / zs stored in another dtype than x): fp32 magic codes, fp32 FMA
                w = ((c | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0) * s.to(tl.float32) \
                    - z.to(tl.float32)
                if EMULATE_BF16:
                    w = _round_to_bf16(w)
            if EMULATE_BF16:
                w = w.to(tl.float32)
                a = a.to(tl.float32)
            else:
                w = w.to(DT)
            if SWAP_AB:
                acc += tl.dot(w, a)
            else:
                acc += tl.dot(a, w)
        if SWAP_AB:
            acc = tl.trans(acc)
        _store_tile(acc, rm, rn, m_ok, n_ok, b_ptr, y_ptr, stride_ym, pid_k, HAS_BIAS, SPLIT_K, EMULATE_BF16)

    @triton.jit
    def _codes_as_float(words, shift, BITS: tl.constexpr):
        # One code plane as exact floats without int->float conversion: OR the code into the mantissa of 2^23
        # (0x4B000000) and subtract 2^23 (a shift + LOP3 + FADD instead of the slow I2F).
        q = ((words >> shift) & ((1 << BITS) - 1)) | 0x4B000000
        return q.to(tl.float32, bitcast=True) - 8388608.0

    @triton.jit
    def _w4a16_skinny_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, g_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K,
                             group_size, split_k,
                             stride_xm, stride_ym, BITS: tl.constexpr, HAS_GIDX: tl.constexpr,
                             ZMODE: tl.constexpr, SCALE_ROW: tl.constexpr, HAS_BIAS: tl.constexpr,
                             USE_DOT: tl.constexpr, EMULATE_BF16: tl.constexpr, DEQ16: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """Small M (decode): all M rows in one program, one K-slice per program (split-K). The K-block's words
        [BLOCK_K / P, BLOCK_N] are read once and visited one code plane j at a time (rows P*i + j), so codes are
        never interleaved back into row order. With one scale row per K-block (SCALE_ROW) the block computes
        s * (x . q) - zs * sum(x): the scales touch each output once per block, not once per weight.
        Without tl.dot (USE_DOT=False) products stay in a [BLOCK_M, BLOCK_K / P, BLOCK_N] accumulator laid out
        like the words, so every thread adds into its own registers; the reduction over the word rows (across
        warps) happens once, after the K loop. With tl.dot and 16-bit x the code planes are made directly in x's
        dtype (`_codes_as_half`: no fp32 -> fp16 cast), and per-row scales (DEQ16: s, zs stored in x's dtype)
        fold in with one 16-bit FMA (`_dequant_half`)."""
        P: tl.constexpr = 32 // BITS
        DT: tl.constexpr = x_ptr.dtype.element_ty
        HALF: tl.constexpr = USE_DOT and DT != tl.float32
        WR: tl.constexpr = BLOCK_K // P
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rm = tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = rm < M
        n_ok = rn < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if not USE_DOT:
            acc3 = tl.zeros((BLOCK_M, WR, BLOCK_N), dtype=tl.float32)
        for k0 in range(pid_k * BLOCK_K, K, split_k * BLOCK_K):
            rw = k0 // P + tl.arange(0, WR)
            w_ok = rw < K // P
            words = tl.load(qw_ptr + rw[:, None] * N + rn[None, :], mask=w_ok[:, None] & n_ok[None, :], other=0)
            if SCALE_ROW:
                if USE_DOT:
                    dq = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                    xs = tl.zeros((BLOCK_M,), dtype=tl.float32)
                else:
                    dq3 = tl.zeros((BLOCK_M, WR, BLOCK_N), dtype=tl.float32)
                    xs2 = tl.zeros((BLOCK_M, WR), dtype=tl.float32)
            for j in tl.static_range(P):
                k = rw * P + j
                xj = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=m_ok[:, None] & w_ok[None, :],
                             other=0.0)
                if HALF:  # exact codes in x's dtype (fp32 values under EMULATE_BF16)
                    q = _codes_as_half((words >> (j * BITS)) & ((1 << BITS) - 1), BITS, DT, EMULATE_BF16)
                else:
                    q = _codes_as_float(words, j * BITS, BITS)
                if SCALE_ROW:
                    if USE_DOT:
                        xs += tl.sum(xj.to(tl.float32), axis=1)
                        if EMULATE_BF16:
                            dq += tl.dot(xj.to(tl.float32), q)
                        else:
                            dq += tl.dot(xj, q.to(DT))  # codes are exact in fp16/bf16
                    else:
                        xs2 += xj.to(tl.float32)
                        dq3 += xj.to(tl.float32)[:, :, None] * q[None, :, :]
                elif HALF and DEQ16:
                    s, z = _row_scales(s_ptr, z_ptr, g_ptr, k, w_ok, rn, n_ok, N, group_size, HAS_GIDX, ZMODE,
                                       BITS, EMULATE_BF16, False)
                    w = _fma16(q, s, z, EMULATE_BF16)
                    acc += tl.dot(xj.to(tl.float32) if EMULATE_BF16 else xj, w)
                else:
                    s, z = _row_scales(s_ptr, z_ptr, g_ptr, k, w_ok, rn, n_ok, N, group_size, HAS_GIDX, ZMODE,
                                       BITS, EMULATE_BF16)
                    w = q.to(tl.float32) * s - z
                    if USE_DOT:
                        if EMULATE_BF16:
                            acc += tl.dot(xj.to(tl.float32), _round_to_bf16(w))
                        else:
                            acc += tl.dot(xj, w.to(x_ptr.dtype.element_ty))
                    else:
                        acc3 += xj.to(tl.float32)[:, :, None] * w[None, :, :]
            if SCALE_ROW:
                g = k0 // group_size
                s = tl.load(s_ptr + g * N + rn, mask=n_ok, other=0.0).to(tl.float32)
                z = _zero_point(z_ptr, g * N + rn, n_ok, s, ZMODE, BITS, EMULATE_BF16).to(tl.float32)
                if USE_DOT:
                    acc += dq * s[None, :] - xs[:, None] * z[None, :]
                else:
                    acc3 += dq3 * s[None, None, :] - xs2[:, :, None] * z[None, None, :]
        if not USE_DOT:
            acc += tl.sum(acc3, axis=1)
        _splitk_store(acc, rm, rn, m_ok, n_ok, ws_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, split_k, HAS_BIAS,
                      EMULATE_BF16)

    @triton.jit
    def _code_denormal(words, SHIFT: tl.constexpr):
        # The 4-bit code at bits SHIFT..SHIFT+3 (SHIFT <= 16), masked in place and read as an fp32 bit pattern, is
        # the subnormal code * 2^(SHIFT - 149): one LOP3 per weight, no shift, no int->float conversion. FMAs take
        # subnormals at full rate (no .ftz in Triton's fp32 arithmetic); `_gemv_row` scales x by
        # 2^(85 - SHIFT) so that each product x * code * 2^-64 is a normal float. Range: |x| < 2^42 (fp16 always;
        # bf16 activations beyond would overflow), and products below 2^-126, i.e. |x| < ~2^-60, underflow.
        return (words & (15 << SHIFT)).to(tl.float32, bitcast=True)

    @triton.jit
    def _gemv_row(x_ptr, m, stride_xm, M, wrow, w_ok, p0, p1, p2, p3, p4, p5, p6, p7, s, z,
                  REDUCE_ROWS: tl.constexpr, SPREAD_X: tl.constexpr):
        # One activation row against a K-block's eight code planes [WR, BN] from `_code_denormal` (rows
        # k = 8 * wrow + j, planes 0-4 at bit 4j, 5-7 at bit 4j - 12, one scale row): returns
        # 2^-64 * (s * sum_k x q - zs * sum_k x), summed over the block's rows ([BN]) or per word row ([WR, BN]).
        # x is scaled by 2^(85 - shift) so every product is x * q * 2^-64, a normal float; the caller undoes 2^-64.
        ok = w_ok & ((wrow * 0 + m) < M)
        if SPREAD_X:
            # the block's activations [WR, 8] loaded once, spread over the lanes (not each lane loading,
            # converting and scaling all of them: 3.9 -> 3.1 instructions a weight with 128-column tiles, 2.8 ->
            # 2.6 with 512, sm_90), each times its plane's power of two 2^e, e = 85 - 4j (j < 5), then 77, 73,
            # 69 (codes 5-7 come from words >> 12), made exactly from its exponent bits; then handed out by plane
            j = tl.arange(0, 8)
            xt = tl.load(x_ptr + m * stride_xm + (wrow * 8)[:, None] + j[None, :], mask=ok[:, None],
                         other=0.0).to(tl.float32)
            xs = tl.sum(xt, axis=1) * 5.421010862427522e-20  # 2^-64
            e = tl.where(j < 5, 85 - 4 * j, 97 - 4 * j)
            xt = xt * ((e + 127) << 23).to(tl.float32, bitcast=True)[None, :]
            xa, xb = tl.split(tl.reshape(xt, (xt.shape[0], 4, 2)))  # j even, odd
            x04, x26 = tl.split(tl.reshape(xa, (xt.shape[0], 2, 2)))
            x15, x37 = tl.split(tl.reshape(xb, (xt.shape[0], 2, 2)))
            x0, x4 = tl.split(x04)
            x2, x6 = tl.split(x26)
            x1, x5 = tl.split(x15)
            x3, x7 = tl.split(x37)
        else:  # each lane loads all of them (the spread form spills registers in wide tiles with 2+ rows, and
            # back to back on the H100 it made 512-column tiles slower: 12.9 -> 16.2 us on 4096 x 12288, call 38)
            row = x_ptr + m * stride_xm + wrow * 8
            x0 = tl.load(row + 0, mask=ok, other=0.0).to(tl.float32)
            x1 = tl.load(row + 1, mask=ok, other=0.0).to(tl.float32)
            x2 = tl.load(row + 2, mask=ok, other=0.0).to(tl.float32)
            x3 = tl.load(row + 3, mask=ok, other=0.0).to(tl.float32)
            x4 = tl.load(row + 4, mask=ok, other=0.0).to(tl.float32)
            x5 = tl.load(row + 5, mask=ok, other=0.0).to(tl.float32)
            x6 = tl.load(row + 6, mask=ok, other=0.0).to(tl.float32)
            x7 = tl.load(row + 7, mask=ok, other=0.0).to(tl.float32)
            xs = (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7) * 5.421010862427522e-20  # 2^-64
            x0 = x0 * 3.8685626227668134e+25  # 2^85
            x1 = x1 * 2.4178516392292583e+24  # 2^81
            x2 = x2 * 1.5111572745182865e+23  # 2^77
            x3 = x3 * 9.44473296573929e+21  # 2^73
            x4 = x4 * 5.902958103587057e+20  # 2^69
            x5 = x5 * 1.5111572745182865e+23  # 2^77 (code 5 at bit 8 of words >> 12)
            x6 = x6 * 9.44473296573929e+21  # 2^73
            x7 = x7 * 5.902958103587057e+20  # 2^69
        dq = x0[:, None] * p0
        dq += x1[:, None] * p1
        dq += x2[:, None] * p2
        dq += x3[:, None] * p3
        dq += x4[:, None] * p4
        dq += x5[:, None] * p5
        dq += x6[:, None] * p6
        dq += x7[:, None] * p7
        if REDUCE_ROWS:
            return tl.sum(dq, axis=0) * s - tl.sum(xs, axis=0) * z
        else:
            return dq * s[None, :] - xs[:, None] * z[None, :]

    @triton.jit
    def _w4a16_gemv_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, group_size,
                           k_split, split_k, stride_xm, stride_ym, ZMODE: tl.constexpr, HAS_BIAS: tl.constexpr,
                           EVEN: tl.constexpr, REDUCE_ROWS: tl.constexpr, SPREAD_X: tl.constexpr,
                           EMULATE_BF16: tl.constexpr, PDL: tl.constexpr, PREFETCH_BLOCKS: tl.constexpr,
                           TRIGGER_LATE: tl.constexpr, GLU: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """Decode GEMV (M <= 4, 4-bit codes, contiguous groups, one scale row per K-block), CUDA-core FMAs on
        2-D tiles only (3-D broadcasts cost layout conversions through shared memory). Program (n-tile,
        k-slice) streams words [BLOCK_K / 8, BLOCK_N] over a contiguous range of k_split rows; the eight code
        planes come from `_code_in_place` (LOP3 + FADD per weight), shared by the rows; scales fold in once per
        K-block. REDUCE_ROWS sums each block's word rows at once (cheap when a thread holds whole columns, as
        with one warp), else per-row partials are summed after the loop. SPREAD_X (M = 1, tuned): the block's
        activations are loaded spread over the lanes (`_gemv_row`). PDL (launched with programmatic
        dependent launch): the program waits for the previous kernel (x, the split-K workspace) and lets the next
        one launch (after its K loop with TRIGGER_LATE); PREFETCH_BLOCKS > 0 first asks L2 for that many K-blocks
        of its weight slice, which no earlier kernel writes.
        GLU: the columns alternate gate, up, and y [M, N / 2] gets silu(gate) * up (`splitk.store_y`)."""
        WR: tl.constexpr = BLOCK_K // 8
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rw = tl.arange(0, WR)
        n_ok = rn < N
        if REDUCE_ROWS:
            acc0 = tl.zeros((BLOCK_N,), dtype=tl.float32)
            acc1 = tl.zeros((BLOCK_N,), dtype=tl.float32)
            acc2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
            acc3 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        else:
            acc0 = tl.zeros((WR, BLOCK_N), dtype=tl.float32)
            acc1 = tl.zeros((WR, BLOCK_N), dtype=tl.float32)
            acc2 = tl.zeros((WR, BLOCK_N), dtype=tl.float32)
            acc3 = tl.zeros((WR, BLOCK_N), dtype=tl.float32)
        k_lo = pid_k * k_split
        k_hi = tl.minimum(K, k_lo + k_split)
        if PDL and PREFETCH_BLOCKS > 0:
            # the slice's first PREFETCH_BLOCKS K-blocks, one address per 128-byte line (32 words), clamped inside
            # the tensor: what the loop reads first, not the whole slice, which the resident programs together
            # could make larger than L2 (asking for all of it was 9% slower end to end, H100 call 24)
            cols = tl.minimum(pid_n * BLOCK_N + tl.arange(0, (BLOCK_N + 31) // 32) * 32, N - 1)
            for k0 in range(k_lo, tl.minimum(k_hi, k_lo + PREFETCH_BLOCKS * BLOCK_K), BLOCK_K):
                rows = tl.minimum(k0 // 8 + rw, K // 8 - 1)
                _prefetch_l2(qw_ptr + rows[:, None] * N + cols[None, :])
        if PDL:
            if TRIGGER_LATE:
                _pdl_wait_only()
            else:
                _pdl_wait()
        for k0 in range(k_lo, k_hi, BLOCK_K):
            wrow = k0 // 8 + rw
            w_ptrs = qw_ptr + wrow[:, None] * N + rn[None, :]
            w_ok = wrow < K // 8
            if EVEN:
                words = tl.load(w_ptrs, eviction_policy="evict_first")
            else:
                words = tl.load(w_ptrs, mask=w_ok[:, None] & n_ok[None, :], other=0, eviction_policy="evict_first")
            high = words >> 12  # codes 5, 6, 7 now at bits 8..19 (the masks drop the sign-extended bits)
            p0 = _code_denormal(words, 0)
            p1 = _code_denormal(words, 4)
            p2 = _code_denormal(words, 8)
            p3 = _code_denormal(words, 12)
            p4 = _code_denormal(words, 16)
            p5 = _code_denormal(high, 8)
            p6 = _code_denormal(high, 12)
            p7 = _code_denormal(high, 16)
            g = k0 // group_size
            s = tl.load(s_ptr + g * N + rn, mask=n_ok, other=0.0).to(tl.float32)
            z = _zero_point(z_ptr, g * N + rn, n_ok, s, ZMODE, 4, False).to(tl.float32)
            acc0 += _gemv_row(x_ptr, 0, stride_xm, M, wrow, w_ok, p0, p1, p2, p3, p4, p5, p6, p7, s, z,
                              REDUCE_ROWS, SPREAD_X)
            if BLOCK_M > 1:
                acc1 += _gemv_row(x_ptr, 1, stride_xm, M, wrow, w_ok, p0, p1, p2, p3, p4, p5, p6, p7, s, z,
                                  REDUCE_ROWS, SPREAD_X)
            if BLOCK_M > 2:
                acc2 += _gemv_row(x_ptr, 2, stride_xm, M, wrow, w_ok, p0, p1, p2, p3, p4, p5, p6, p7, s, z,
                                  REDUCE_ROWS, SPREAD_X)
                acc3 += _gemv_row(x_ptr, 3, stride_xm, M, wrow, w_ok, p0, p1, p2, p3, p4, p5, p6, p7, s, z,
                                  REDUCE_ROWS, SPREAD_X)
        if PDL and TRIGGER_LATE:
            _pdl_launch_dependents()
        if not REDUCE_ROWS:
            out0 = tl.sum(acc0, axis=0)
            out1 = tl.sum(acc1, axis=0)
            out2 = tl.sum(acc2, axis=0)
            out3 = tl.sum(acc3, axis=0)
        else:
            out0 = acc0
            out1 = acc1
            out2 = acc2
            out3 = acc3
        rm = tl.arange(0, BLOCK_M)
        m_ok = rm < M
        out = tl.where(rm[:, None] == 0, out0[None, :], out1[None, :])
        if BLOCK_M > 2:
            out = tl.where(rm[:, None] == 2, out2[None, :], tl.where(rm[:, None] == 3, out3[None, :], out))
        out = out * 18446744073709551616.0  # 2^64
        _splitk_store(out, rm, rn, m_ok, n_ok, ws_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, split_k, HAS_BIAS,
                      EMULATE_BF16, GLU)

    @triton.jit
    def _w4a16_planes_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, group_size, stride_xm, stride_ym,
                             ZMODE: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
                             EMULATE_BF16: tl.constexpr,
                             DEQ16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr):
        """4-bit W4A16 for M > 16 over code planes, y^T tiles = W^T @ x^T (`w4a16_matmul_triton`, path planes).
        x arrives with the columns of each K-block permuted by code plane (`_plane_major`): plane j's
        activations, columns k0 + 8 i + j, are the contiguous slice [k0 + j * BK/8, +BK/8). Per K-block the
        words [BLOCK_N, BK/8] are loaded once; plane j = (words >> 4 j) & 15, dequantized elementwise
        (`_dequant_half` with DEQ16, else fp32 and cast) with no join, reshape or permute, so it reaches wgmma as
        the register A operand with no shared-memory round trip, and x's slice is a plain tile that streams
        into shared memory for the B operand (sm_90 SASS, triton 3.6, 128 x 128 x 128 tile: 5.25 instructions
        per weight per BLOCK_M rows, 2 STS and 5 barriers a K-block, against 6.7, 18 and 13 for the tiled
        kernel)."""
        WR: tl.constexpr = BLOCK_K // 8
        DT: tl.constexpr = x_ptr.dtype.element_ty
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        pid_k = tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rw = tl.arange(0, WR)
        m_ok = rm < M
        n_ok = rn < N
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k0 in range(pid_k * BLOCK_K, K, SPLIT_K * BLOCK_K):
            words = tl.load(qw_ptr + (k0 // 8 + rw)[None, :] * N + rn[:, None], mask=n_ok[:, None], other=0)
            g = k0 // group_size
            s = tl.load(s_ptr + g * N + rn, mask=n_ok, other=0.0)
            z = _zero_point(z_ptr, g * N + rn, n_ok, s, ZMODE, 4, EMULATE_BF16)[:, None]
            s = s[:, None]
            for j in tl.static_range(8):
                q = (words >> (4 * j)) & 15
                if DEQ16:
                    w = _dequant_half(q, s, z, 4, DT, EMULATE_BF16)
                else:
                    w = ((q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0) * s.to(tl.float32) \
                        - z.to(tl.float32)
                    if EMULATE_BF16:
                        w = _round_to_bf16(w)
                xj = tl.load(x_ptr + rm[None, :] * stride_xm + (k0 + j * WR + rw)[:, None], mask=m_ok[None, :],
                             other=0.0)
                if EMULATE_BF16:
                    acc += tl.dot(w.to(tl.float32), xj.to(tl.float32))
                else:
                    acc += tl.dot(w.to(DT), xj)
        _store_tile(tl.trans(acc), rm, rn, m_ok, n_ok, b_ptr, y_ptr, stride_ym, pid_k, HAS_BIAS, SPLIT_K,
                    EMULATE_BF16)

    # Fragment order of a 128-row K-block (the frag path): position k = e + 2c + 8h + 16 s_lo + 32 s_hi
    # (e, h, s_lo in {0, 1}, c, s_hi in 0..3) holds row 8i + j + 4e of the block, i = 4 s_hi + c, j = h + 2 s_lo:
    #
    #   packed word i (rows 8i .. 8i+7, nibble r holds row 8i + r, the canonical layout, unchanged)
    #     >> 4j, & 0x000F000F  ->  one 32-bit register holding nibble j (low half, e = 0) and nibble j + 4 (high
    #                              half, e = 1): the rows at positions k and k + 1 of the fragment order
    #
    # An sm_80/sm_90 MMA's A fragment gives each thread of a quad (c = lane % 4) of row n the pairs
    # (2c + 8h + 16s, +1), h in {0, 1}, s the k16 step: in fragment order these are the 16 pairs of the 4 words
    # i = 4 s_hi + c of that row, all in the thread that holds those words, so W^T's A operand is made in the
    # registers wgmma/mma read it from, two weights per LOP3 and per packed 16-bit FMA, no shuffles. x's columns
    # are permuted into the same order (`_fragment_order`) so the product is unchanged.
    #
    # Each K-block's wgmmas are retired (wait 0) before the next block's A registers are written. Triton 3.6
    # pipelines register-A wgmmas across iterations (wait <= 7 pending) and leaves ptxas to keep their registers
    # alive; ptxas reuses them at once (sm_90 SASS: the next block's loads and dequantization write the A
    # registers of wgmmas still pending), a race upstream knows (triton-lang/triton#9433, fixed after 3.6). On the
    # H100 (ninth session, `.ci/gpu/frag_check.py`) 128 x 128 / 8 warps / 3 stages gave 0.12 relative error,
    # 256 x 128 / 8 warps 5e-3 on rows 0-7 of a warp's A fragment, 128 x 128 / 4 warps with split-K NaN, each
    # differing from run to run; 2 stages and 4-warp tiles mostly hid it.
    #
    # Scaling each K-block's product in fp32 instead (codes minus zeros into the wgmma, one HFMA2 fewer a register
    # pair, W never rounded) ran 4-21% slower at M = 1 and 16 on an H200 (fourteenth session): at decode the K loop
    # is latency-bound (Nsight Compute: two CTAs an SM, no eligible warp in 49% of cycles), not issue-bound.

    @triton.jit
    def _frag_pair_dequant(u, nzz, s, nzs, DT: tl.constexpr, ASM: tl.constexpr, EMULATE_BF16: tl.constexpr):
        """Word pairs u [.., 2] (int32 word >> 4j, the same register twice) -> W in DT for the codes in bits
        0..3 (e = 0) and 16..19 (e = 1): (magic + q) - (magic + z) (exact: small integers), times s, minus zs,
        rounded once. On the GPU per register: one LOP3 ((u & 0x000F000F) | magic: both codes OR-ed into the
        mantissa of the magic, `_codes_as_half`) and two packed FMAs, in inline PTX since Triton has no 32-bit ->
        2 x 16-bit bitcast (splitting the register costs PRMTs). Interpreted: the same values on unpacked halves
        in fp32, rounded once to DT."""
        if DT == tl.float16:
            MAGIC: tl.constexpr = 0x64006400  # 1024 + code in each half
        else:
            MAGIC: tl.constexpr = 0x43004300  # 128 + code
        if ASM:
            if DT == tl.float16:
                w = tl.inline_asm_elementwise(
                    "{ .reg .b32 d, one; lop3.b32 d, $1, 0x000F000F, 0x64006400, 0xea; mov.b32 one, 0x3C003C00; "
                    "fma.rn.f16x2 d, d, one, $3; fma.rn.f16x2 $0, d, $4, $5; }",
                    "=r,r,r,r,r,r", [u, nzz, s, nzs], dtype=tl.float16, is_pure=True, pack=2)
            else:
                w = tl.inline_asm_elementwise(
                    "{ .reg .b32 d, one; lop3.b32 d, $1, 0x000F000F, 0x43004300, 0xea; mov.b32 one, 0x3F803F80; "
                    "fma.rn.bf16x2 d, d, one, $3; fma.rn.bf16x2 $0, d, $4, $5; }",
                    "=r,r,r,r,r,r", [u, nzz, s, nzs], dtype=tl.bfloat16, is_pure=True, pack=2)
        else:
            e = tl.arange(0, 2)
            h = ((((u & 0x000F000F) | MAGIC) >> (16 * e)) & 0xFFFF).to(tl.int16)  # low half at e = 0, high at 1
            if EMULATE_BF16:  # the interpreter holds bf16 as uint16, without bf16 arithmetic
                v = h.to(tl.bfloat16, bitcast=True).to(tl.float32)
            else:
                v = h.to(DT, bitcast=True).to(tl.float32)
            d = v + nzz.to(tl.float32)
            w = tl.fma(d, s.to(tl.float32), nzs.to(tl.float32))
            if EMULATE_BF16:
                w = _round_to_bf16(w)
            else:
                w = w.to(DT)
        return w

    @triton.jit
    def _frag_acc(x_ptr, qw_ptr, s_ptr, z_ptr, rm, rn, m_ok, n_ok, k_lo, k_hi, N, group_size, stride_xm,
                  ZMODE: tl.constexpr, EVEN_N: tl.constexpr, EVEN_M: tl.constexpr, ASM: tl.constexpr,
                  EMULATE_BF16: tl.constexpr, PERMUTE_X: tl.constexpr, Z_WORDS: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr):
        """y^T tile [BLOCK_N, BLOCK_M] (fp32) of the rows k_lo..k_hi of K (multiples of 128): the frag path's K loop
        (`_w4a16_frag_kernel`)."""
        DT: tl.constexpr = x_ptr.dtype.element_ty
        if DT == tl.float16:
            BASE: tl.constexpr = 1024.0  # the magic of `_codes_as_half`
        else:
            BASE: tl.constexpr = 128.0
        rk = tl.arange(0, 128)
        rw = tl.arange(0, 16)
        # words [BLOCK_N, 16], n fastest: each warp's async copies read 512 contiguous bytes of a row of qweight.
        # Read back in fragment layout this is a 4-way shared-memory bank conflict (a quad's 4 words of row n sit
        # in one bank); staging them conflict-free as [s_hi, n_hi][c, n_lo] lines (32 words: 32 banks) made the
        # copies read 32-byte runs of 4 rows at a time, and Llama-3-70B gate_up at M = 16 ran 110 us against 97
        # (Nsight Compute, H100, eighth session: DRAM 67% against 75% of peak)
        w_ptrs = qw_ptr + (k_lo // 8 + rw)[None, :] * N + rn[:, None]
        x_ptrs = x_ptr + rm[None, :] * stride_xm + (k_lo + rk)[:, None]
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k0 in range(k_lo, k_hi, 128):
            if EVEN_N:
                words = tl.load(w_ptrs)
            else:
                words = tl.load(w_ptrs, mask=n_ok[:, None], other=0)
            # the scale row: 2 values, 4 bytes a thread, which the pipeliner copies asynchronously (triton 3.6);
            # uint8 zero codes are read as words of 4 (Z_WORDS) for the same reason: byte loads (1-2 bytes a
            # thread) stay synchronous, one stall per K-block
            g_off = (k0 // group_size) * N + rn
            s = tl.load(s_ptr + g_off, mask=n_ok, other=0.0)
            if ZMODE == 1 and Z_WORDS:  # each column reads the word holding its code: the layout of s, no shuffles
                zw = tl.load(z_ptr.to(tl.pointer_type(tl.int32)) + (k0 // group_size) * (N // 4) + rn // 4,
                             mask=n_ok, other=0)
                z = (zw >> (8 * (rn % 4))) & 0xFF
            elif ZMODE != 2:
                z = tl.load(z_ptr + g_off, mask=n_ok, other=0)
            if ZMODE == 0:  # pre-multiplied zs: q * s - zs
                nzz = tl.full((BLOCK_N,), -BASE, DT)
                nzs = -(z.to(DT))
            else:  # (q - z) * s, exact before its one rounding
                if ZMODE == 1:
                    zf = z.to(tl.float32)
                else:
                    zf = tl.full((BLOCK_N,), 8.0, tl.float32)
                nzz = (-(zf + BASE)).to(DT)
                nzs = tl.zeros((BLOCK_N,), DT)
            w4 = tl.reshape(words, (BLOCK_N, 4, 4))  # [n, s_hi, c]
            t = tl.join(tl.join(w4, w4 >> 4), tl.join(w4 >> 8, w4 >> 12))  # word >> 4j
            # t [n, s_hi, c, h, s_lo] (each join adds a last dim: j = h + 2 s_lo); each register twice along e, as
            # pack=2 hands the asm pairs of consecutive elements
            shp: tl.constexpr = (BLOCK_N, 4, 4, 2, 2, 2)
            w = _frag_pair_dequant(tl.broadcast_to(t[:, :, :, :, :, None], shp),
                                   tl.broadcast_to(nzz[:, None, None, None, None, None], shp),
                                   tl.broadcast_to(s[:, None, None, None, None, None], shp),
                                   tl.broadcast_to(nzs[:, None, None, None, None, None], shp),
                                   DT, ASM, EMULATE_BF16)
            a = tl.reshape(tl.permute(w, (0, 1, 4, 3, 2, 5)), (BLOCK_N, 128))  # [n, s_hi, s_lo, h, c, e] = k
            if EVEN_M:  # no mask: fewer instructions for each of x's async copies
                xt = tl.load(x_ptrs)
            else:
                xt = tl.load(x_ptrs, mask=m_ok[None, :], other=0.0)
            if PERMUTE_X:  # x in natural order: rows k = 32 s_hi + 8 c + 4 e + 2 s_lo + h into fragment order
                xt = tl.reshape(tl.permute(tl.reshape(xt, (4, 4, 2, 2, 2, BLOCK_M)), (0, 3, 4, 1, 2, 5)),
                                (128, BLOCK_M))
            if EMULATE_BF16:
                acc += tl.dot(a, xt.to(tl.float32))
            else:
                acc += tl.dot(a, xt)
            if ASM:  # a use of acc: the K-block's wgmmas retire here, before the next block's A registers exist
                acc = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [acc], dtype=tl.float32, is_pure=True,
                                                pack=1)
            w_ptrs += 16 * N
            x_ptrs += 128
        return acc

    @triton.jit
    def _w4a16_frag_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, group_size,
                           k_split, split_k, n_tiles, tiles, stride_xm, stride_ym, ZMODE: tl.constexpr,
                           HAS_BIAS: tl.constexpr, EVEN_N: tl.constexpr, EVEN_M: tl.constexpr, ASM: tl.constexpr,
                           EMULATE_BF16: tl.constexpr, PERMUTE_X: tl.constexpr, Z_WORDS: tl.constexpr,
                           STREAM_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """4-bit W4A16, y^T tiles = W^T @ x^T over 128-row K-blocks in fragment order (above; path frag). Per
        K-block: words [BLOCK_N, 16] (4 of them per thread and row), one scale (and zero) row, x^T [128,
        BLOCK_M] streamed into shared memory as wgmma's B operand; W^T, dequantized in the A fragment's
        registers, is one tl.dot; its wgmmas retire before the next block's A registers are written (above),
        while the next blocks' words and x stream in.
        Split-K (grid (tiles, split_k)): program (t, k) takes K-slice k of k_split rows of tile t = pid_n + n_tiles *
        pid_m.
        Stream-K (STREAM_K, grid (G,)): the tiles x K-blocks units are cut into G equal runs, one per program,
        so every SM gets the same work whatever the number of tiles (no partly filled last wave); a run crosses
        tile boundaries, and a tile shared by several programs is summed through the workspace
        (`kernels.splitk.tile_store`). Tiles t = pid_m + m_tiles * pid_n."""
        if STREAM_K:
            kb = K // 128
            m_tiles = tiles // n_tiles
            G = tl.num_programs(0)
            total = kb.to(tl.int64) * tiles  # (tiles == 1 arrives as a Python int)
            pid = tl.program_id(0).to(tl.int64)
            u = pid * total // G
            end = (pid + 1) * total // G
            while u < end:
                tile = (u // kb).to(tl.int32)
                t0 = tile.to(tl.int64) * kb
                seg_end = tl.minimum(end, t0 + kb)
                pid_m = tile % m_tiles  # M fastest: the programs at work share W's tiles (read once from HBM)
                pid_n = tile // m_tiles
                rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
                rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
                m_ok = rm < M
                n_ok = rn < N
                acc = _frag_acc(x_ptr, qw_ptr, s_ptr, z_ptr, rm, rn, m_ok, n_ok, ((u - t0) * 128).to(tl.int32),
                                ((seg_end - t0) * 128).to(tl.int32), N, group_size, stride_xm, ZMODE, EVEN_N, EVEN_M,
                                ASM, EMULATE_BF16, PERMUTE_X, Z_WORDS, BLOCK_M, BLOCK_N)
                # the programs whose runs meet this tile: program p starts at unit p * total // G
                first = ((t0 + 1) * G - 1) // total
                last = ((t0 + kb) * G - 1) // total
                _tile_store(tl.trans(acc), rm, rn, m_ok, n_ok, ws_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, tile,
                            (last - first + 1).to(tl.int32), HAS_BIAS, EMULATE_BF16)
                u = seg_end
        else:
            tile = tl.program_id(0)
            pid_k = tl.program_id(1)
            pid_m = tile // n_tiles
            pid_n = tile % n_tiles
            rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            m_ok = rm < M
            n_ok = rn < N
            k_lo = pid_k * k_split
            acc = _frag_acc(x_ptr, qw_ptr, s_ptr, z_ptr, rm, rn, m_ok, n_ok, k_lo, tl.minimum(K, k_lo + k_split), N,
                            group_size, stride_xm, ZMODE, EVEN_N, EVEN_M, ASM, EMULATE_BF16, PERMUTE_X, Z_WORDS,
                            BLOCK_M, BLOCK_N)
            _splitk_store(tl.trans(acc), rm, rn, m_ok, n_ok, ws_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, split_k,
                          HAS_BIAS, EMULATE_BF16)

    @triton.jit
    def _w4a16_dequant_kernel(qw_ptr, s_ptr, z_ptr, g_ptr, w_ptr, N, K, group_size, BITS: tl.constexpr,
                              HAS_GIDX: tl.constexpr, ZMODE: tl.constexpr, EMULATE_BF16: tl.constexpr,
                              BLOCK_N: tl.constexpr,
                              BLOCK_K: tl.constexpr):
        """W [K, N] = q * s[g] - zs[g] in the activation dtype, for large M (then one cuBLAS GEMM)."""
        P: tl.constexpr = 32 // BITS
        WR: tl.constexpr = BLOCK_K // P
        rw = tl.program_id(0) * WR + tl.arange(0, WR)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        w_ok = rw < K // P
        n_ok = rn < N
        ok = w_ok[:, None] & n_ok[None, :]
        words = tl.load(qw_ptr + rw[:, None] * N + rn[None, :], mask=ok, other=0)
        for j in tl.static_range(P):
            k = rw * P + j
            s, z = _row_scales(s_ptr, z_ptr, g_ptr, k, w_ok, rn, n_ok, N, group_size, HAS_GIDX, ZMODE, BITS,
                               EMULATE_BF16)
            w = _codes_as_float(words, j * BITS, BITS) * s - z
            if EMULATE_BF16:
                w = _round_to_bf16(w)
            tl.store(w_ptr + k[:, None] * N + rn[None, :], w.to(w_ptr.dtype.element_ty), mask=ok)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def pow2_near(x: float) -> int:
    """The power of two nearest x in log scale, at least 1 (split-K factors)."""
    return 1 << max(0, round(math.log2(max(x, 1))))


SKINNY_MAX_M = 16  # at or below: the skinny (decode) kernel; above: the tiled kernel or dequantize + cuBLAS
DEQUANT_MIN_M = 1024  # untuned default: from here dequantize + cuBLAS beats the fused tiled kernel
# Under PDL the gemv may ask L2 for this many K-blocks of its weight slice before waiting on the previous kernel.
# 0 by default: on the H100 the GPTQ decode step with PDL ran at 388 tok/s asking for 2 blocks, 432 with none
# (407 without PDL; call 29, results/h100/README.md). A diagnostic switch sets it.
GEMV_PDL_PREFETCH_BLOCKS = int(os.environ.get("QUANTBENCH_GEMV_PDL_PREFETCH", "0"))
GEMV_PDL_TRIGGER_LATE = os.environ.get("QUANTBENCH_GEMV_PDL_TRIGGER", "start") == "late"
if os.environ.get("QUANTBENCH_GEMV_PDL_TRIGGER", "start") not in ("start", "late"):
    raise ValueError(f"QUANTBENCH_GEMV_PDL_TRIGGER={os.environ['QUANTBENCH_GEMV_PDL_TRIGGER']!r}: use start or late")
GEMV_MAX_M = 4  # the gemv path (4-bit, contiguous groups) serves M <= 4
GEMV_DEFAULT_MAX_M = 2  # untuned, it is the default up to here (measured on the H100); M = 3-4 only when tuned
PATHS = ("gemv", "skinny", "tiled", "planes", "frag", "dequant", "gluon")
# What a config holds; a tuned table's entries also carry their measurements (median_ms, default_ms).
CONFIG_KEYS = ("path", "block_m", "block_n", "block_k", "split_k", "num_warps", "num_stages", "use_dot",
               "reduce_rows", "swap_ab", "spread_x", "permute_x", "stream_k", "consumers")
VARIANT_KEYS = ("use_dot", "reduce_rows", "swap_ab", "spread_x", "permute_x", "stream_k")  # each path's own flags
TUNING_ENV = "QUANTBENCH_W4A16_TUNING"
TUNED_FILE = os.path.join(os.path.dirname(__file__), "tuned", "w4a16.json")


def tuning_key(M: int, N: int, K: int, bits: int, group_size: int, has_g_idx: bool,
               zero_codes: bool = False) -> str:
    """zero_codes: layers holding uint8/int16 zero codes (`zero_codes`) have entries of their own ("_zp"), since
    reading them can favour other tiles (H100, M = 1, 4096 x 22016: 20.2 us symmetric, 24.8 us with codes in
    one tile; equal in another)."""
    return f"N{N}_K{K}_b{bits}_g{group_size}{'_gidx' if has_g_idx else ''}{'_zp' if zero_codes else ''}_M{m_bucket(M)}"


def tuned_config(M: int, N: int, K: int, bits: int, group_size: int, has_g_idx: bool, device,
                 zero_codes: bool = False) -> dict | None:
    """The committed per-GPU choice (path + tiles) for this shape and M-bucket (layers with zero codes: their
    own entry if there is one, else the shape's), or None (heuristics apply). Table: {gpu name: {tuning_key:
    config}}; $QUANTBENCH_W4A16_TUNING points at another file. A gluon entry carries `fallback`: the fastest
    other config the tuner timed, for the calls the Gluon kernel does not take (bf16, pre-multiplied zeros, glu). A GPU
    without an entry of its own takes the same chip's (`kernels.tuning.SAME_CHIP`: the H200 the H100's)."""
    path = os.environ.get(TUNING_ENV, TUNED_FILE)
    keys = CONFIG_KEYS + ("fallback",)
    if zero_codes:
        entry = lookup(path, device, tuning_key(M, N, K, bits, group_size, has_g_idx, True), keys, _gpu_name, True)
        if entry is not None:
            return entry
    entry = lookup(path, device, tuning_key(M, N, K, bits, group_size, has_g_idx), keys, _gpu_name, True)
    return _fit_zero_codes(entry, M) if zero_codes and entry is not None else entry


# Weights a one-warp M >= 2 gemv program may hold per K-block when the layer reads zero codes: sm_90 SASS (triton
# 3.6, `python -m kernels.sass gemv --m 2 --zeros codes`) spills from 256 x 64 (89 STL/LDL) and 512 x 32 (925) up,
# not at 256 x 32; symmetric layers' 512 x 32 does not spill. On the H100 the spilling 512 x 32 entry ran the
# zero-code Llama-3-70B gate_up at M = 2 at 0.40x fp16 against 2.18x symmetric (seventh session, call 2).
GEMV_ZERO_CODE_TILE = 256 * 32


def _fit_zero_codes(entry: dict, M: int) -> dict:
    """A shape's tuned entry (timed on a symmetric layer) used for a zero-code layer with no entry of its own: an
    M >= 2 gemv tile past GEMV_ZERO_CODE_TILE weights a warp takes 32-row K-blocks, then fewer columns."""
    if entry.get("path") != "gemv" or M < 2:
        return entry
    warps = entry.get("num_warps", 1)
    out = dict(entry)
    if out["block_n"] * out["block_k"] > GEMV_ZERO_CODE_TILE * warps:
        out["block_k"] = min(out["block_k"], 32)
        out["block_n"] = min(out["block_n"], GEMV_ZERO_CODE_TILE * warps // out["block_k"])
    return out


def _plane_major(x: torch.Tensor, block_k: int) -> torch.Tensor:
    """x [M, K] with each K-block's columns grouped by 4-bit code plane: column k0 + j * block_k/8 + i holds
    x[:, k0 + 8 i + j] (the planes path reads plane j's activations as one contiguous slice)."""
    M, K = x.shape
    return x.view(M, K // block_k, block_k // 8, 8).transpose(2, 3).reshape(M, K)


def _fragment_order(x: torch.Tensor) -> torch.Tensor:
    """x [M, K] with each 128-column K-block in fragment order (the frag path; layout above
    `_frag_pair_dequant`): column k0 + e + 2c + 8h + 16 s_lo + 32 s_hi holds x[:, k0 + 8 (4 s_hi + c) + h + 2 s_lo
    + 4 e]. One copy of x (M * K * 2 bytes each way)."""
    M, K = x.shape
    # source column within the block = 32 s_hi + 8 c + 4 e + 2 s_lo + h: view as [s_hi, c, e, s_lo, h]
    return x.view(M, K // 128, 4, 4, 2, 2, 2).permute(0, 1, 2, 5, 6, 3, 4).reshape(M, K)


def frag_zero_words_tile(block_m: int, block_n: int, num_warps: int) -> bool:
    """Frag tiles that read uint8 zero codes as the 32-bit words holding them (Z_WORDS): where the scale row gives
    each thread a column of its own (BLOCK_N >= 32 * num_warps; with fewer columns than threads the word reads
    spill, sm_90 SASS: 128 x 128 / 8 warps went from 5.3 to 25 instructions a weight, triton 3.6), and for
    BLOCK_M <= 64, where the byte load's stall is not hidden behind the K-block's wgmmas. H100, eighth session,
    zero-code layers: Llama-3-70B gate_up M = 16 130 -> 110 us, down M = 64 124 -> 104 us; but down M = 128
    (128 x 128 tiles) 158 -> 206 us."""
    return block_n >= 32 * num_warps and block_m <= 64


def _frag_zero_words(zmode: int, zeros, N: int, block_m: int, block_n: int, num_warps: int) -> bool:
    """Z_WORDS for this layer and tile: uint8 codes, N keeping words whole, a word-aligned tensor, a tile above."""
    return (zmode == 1 and zeros is not None and zeros.dtype == torch.uint8 and N % 4 == 0
            and zeros.data_ptr() % 4 == 0 and frag_zero_words_tile(block_m, block_n, num_warps))


def frag_layout_supported(K: int, group_size: int, bits: int, has_g_idx: bool) -> str | None:
    """None if the frag path serves a layer of this shape and grouping (whatever its dtypes), else why not."""
    gs = K if group_size == -1 else group_size
    if bits != 4 or has_g_idx:
        return f"4-bit codes in contiguous groups (bits={bits}, g_idx={'set' if has_g_idx else None})"
    if K % 128 or gs % 128:
        return f"K and the group size multiples of 128 (K={K}, group_size={gs})"
    return None


def frag_supported(x_dtype, K: int, N: int, scales, zeros, g_idx, group_size: int, bits: int) -> str | None:
    """None if the frag path serves this layer and activation dtype, else why not."""
    why = frag_layout_supported(K, group_size, bits, g_idx is not None)
    if why is not None:
        return why
    if x_dtype not in (torch.float16, torch.bfloat16) or scales.dtype != x_dtype:
        return f"16-bit x with scales of the same dtype (x {x_dtype}, scales {scales.dtype})"
    if zeros is not None and zeros.is_floating_point() and zeros.dtype != x_dtype:
        return f"pre-multiplied zeros in x's dtype (zeros {zeros.dtype})"
    return None


def default_config(M: int, N: int, K: int, group_size: int, has_g_idx: bool, device, bits: int = 4,
                   zero_codes: bool = False) -> dict:
    """Path and tiles: the tuned table's entry for this GPU if there is one, else heuristics (tuned on an H100):
    the gemv for M <= 2, the frag kernel for M = 3-256 (sm_90+, 4-bit, 128-row groups), else the skinny kernel
    for M <= 16, the tiled tl.dot kernel (BLOCK_M 64 / 128x128) up to DEQUANT_MIN_M, then dequantize + cuBLAS."""
    device = torch.device(device)
    tuned = tuned_config(M, N, K, bits, group_size, has_g_idx, device, zero_codes)
    if tuned is not None:
        return tuned
    return _heuristic_config(M, N, K, group_size, has_g_idx, device, bits)


# Untuned, the frag path serves M in this range on sm_90+: on the H100 it won every M = 4-128 point of the 11
# Llama shapes and 10 of 11 at M = 256 (seventh session, call 1), with the tiles below.
FRAG_DEFAULT_M = (3, 256)


def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def _heuristic_config(M: int, N: int, K: int, group_size: int, has_g_idx: bool, device: torch.device,
                      bits: int = 4, frag: bool = True) -> dict:
    """The untuned choice of `default_config`; frag=False: without the frag path (where a tuned or untuned frag
    entry does not take the inputs)."""
    sms = _num_sms(device.index or 0) if device.type == "cuda" else 0  # interpreted: no split-K
    per = 32 // bits
    gs = K if group_size == -1 else group_size
    if (frag and FRAG_DEFAULT_M[0] <= M <= FRAG_DEFAULT_M[1] and device.type == "cuda"
            and frag_layout_supported(K, group_size, bits, has_g_idx) is None and _capability(device) >= (9, 0)):
        # the H100's tuned winners: 16 x 256 tiles to M = 16, 32 x 256 to 32, 64 x 128 to 64, 128 x 128 above, four
        # warps, three stages, split-K (a power of two) to about two programs per SM
        bm = 16 if M <= 16 else 32 if M <= 32 else 64 if M <= 64 else 128
        bn = 256 if bm <= 32 else 128
        tiles = _cdiv(M, bm) * _cdiv(N, bn)
        split = max(1, min(pow2_near(2 * sms / tiles), 16, K // 256))
        return dict(path="frag", block_m=bm, block_n=bn, block_k=128, split_k=split, num_warps=4, num_stages=3)
    if M <= GEMV_DEFAULT_MAX_M and bits == 4 and not has_g_idx and gs % 64 == 0 and device.type == "cuda":
        # One-warp programs, 10-16 per SM, as the tuned H100 entries have them on the Llama-2-7B shapes.
        # M = 1: 512 columns where N is wide, 128 on narrow shapes (o, down), whose 256-column tiles left ~3.5
        # warps per SM and ran at half the bandwidth of the wide ones. M = 2: 32-row tiles (256 columns where N
        # is wide), the widest that do not spill registers on sm_90 (`python -m kernels.sass gemv --m 2`).
        # The split is a power of two (the launcher rounds each K-slice up to whole blocks, which would turn a
        # split of 58 over 64 blocks into 32).
        bn, bk = (512 if N >= 8192 else 128, 64) if M == 1 else (256 if N >= 8192 else 128, 32)
        cfg = dict(path="gemv", block_n=bn, block_k=bk, num_warps=1, num_stages=3, reduce_rows=True)
        target = 14 * sms / _cdiv(N, bn)
        cfg["split_k"] = max(1, min(64, pow2_near(target), _cdiv(K, bk)))
        return cfg
    if M <= SKINNY_MAX_M:
        cfg = dict(path="skinny", block_n=128, block_k=16 * per, num_warps=4, num_stages=3)
        tiles = _cdiv(N, cfg["block_n"])
        cfg["split_k"] = max(1, min(16, _cdiv(2 * sms, tiles), _cdiv(K, cfg["block_k"])))
        return cfg
    if M >= DEQUANT_MIN_M and device.type == "cuda":
        return dict(path="dequant", block_n=128, block_k=16 * per, num_warps=4, num_stages=1, split_k=1)
    if M <= 64 or _cdiv(M, 128) * _cdiv(N, 128) < sms:
        cfg = dict(path="tiled", block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=4)
    else:
        cfg = dict(path="tiled", block_m=128, block_n=128, block_k=64, num_warps=4, num_stages=3)
    if not has_g_idx and group_size != -1 and _pow2(group_size) and 16 <= group_size < cfg["block_k"]:
        cfg["block_k"] = group_size  # one scale row per K-block
    tiles = _cdiv(M, cfg["block_m"]) * _cdiv(N, cfg["block_n"])
    cfg["split_k"] = max(1, min(8, 4 * sms // tiles, _cdiv(K, cfg["block_k"]) // 2)) if cfg["block_m"] <= 64 else 1
    return cfg


TILE_ARGS = ("block_m", "block_n", "block_k", "split_k", "num_warps", "num_stages", "use_dot", "reduce_rows",
             "swap_ab", "spread_x", "permute_x", "stream_k")  # w4a16_matmul_triton's tile and variant arguments


def _resolve(x, qweight, scales, zeros, g_idx, group_size: int, bits: int, M: int, N: int, K: int, path, tiles: dict,
             glu: bool) -> tuple[dict, bool, dict]:
    """The config `w4a16_matmul_triton` runs (path, tiles, variants) from the tuned table or the heuristics, the
    caller's path and tiles (`TILE_ARGS`, None where unset), and what the inputs allow; with whether a tuned gluon
    entry was checked against the layer here, and the tiles the caller named."""
    cfg = dict(default_config(M, N, K, group_size, g_idx is not None, x.device, bits, _zeros_mode(zeros) == 1))
    fallback = cfg.pop("fallback", None)
    tiles_given = any(v is not None for v in tiles.values())
    gluon_checked = False  # a tuned gluon entry checked here (once a call) against the layer
    if path is None and cfg["path"] == "gluon":
        from kernels import w4a16_gluon

        # a tuned entry for a call it cannot take (or whose caller names tiles, which belong to the other paths):
        # the entry's fallback (the tuner's best other config, checked below like any entry), else the untuned choice
        if glu or tiles_given or w4a16_gluon.unsupported(x, qweight, scales, zeros, g_idx, group_size, bits):
            cfg = ({key: v for key, v in fallback.items() if key in CONFIG_KEYS} if fallback is not None else
                   _heuristic_config(M, N, K, group_size, g_idx is not None, x.device, bits, frag=False))
        else:
            gluon_checked = True
    gs_ = K if group_size == -1 else group_size
    if path is None and cfg["path"] == "planes" and (x.dtype == torch.float32 or K % cfg["block_k"]
                                                     or gs_ % cfg["block_k"]):
        cfg["path"] = "tiled"  # a tuned planes entry (keyed without x's dtype) for inputs it does not take
    if path is None and cfg["path"] == "frag" and frag_supported(x.dtype, K, N, scales, zeros, g_idx, group_size,
                                                                 bits) is not None:
        # a tuned entry (timed with fp16 x and scales) for inputs it does not take, e.g. a bf16 model's layer with
        # the checkpoint's fp16 scales: the untuned choice
        cfg = _heuristic_config(M, N, K, group_size, g_idx is not None, x.device, bits, frag=False)
    if path is not None and path != cfg["path"]:  # an explicit path starts from that path's own defaults
        cfg = {"path": path, "block_m": 64, "block_n": 64 if path == "tiled" else 128,
               "block_k": 64 if path == "tiled" else 16 * (32 // bits), "split_k": 1, "num_warps": 4,
               "num_stages": 3}
    explicit = {name: value for name, value in tiles.items() if value is not None}
    if explicit.keys() & {"block_m", "block_n", "block_k", "split_k", "num_warps", "num_stages"}:
        for flag in VARIANT_KEYS:  # a tuned entry's variants belong to its tiles, not to tiles the caller names
            cfg.pop(flag, None)
    cfg.update(explicit)
    return cfg, gluon_checked, explicit


def _gluon_args(cfg: dict, path: str | None, explicit: dict, consumers: int | None) -> tuple[int | None, int | None]:
    """The Gluon kernel's consumer count and token tile as this call names them: the caller's, else a tuned
    entry's (an explicit path's cfg holds the other paths' default block_m), else None (the kernel's own choice,
    `w4a16_gluon.tiles`)."""
    return (consumers if consumers is not None else cfg.get("consumers"),
            explicit.get("block_m", cfg.get("block_m") if path is None else None))


def chosen_config(x, qweight, scales, zeros, g_idx, group_size: int, bits: int, *, path: str | None = None,
                  consumers: int | None = None, glu: bool = False, **tiles) -> dict:
    """What `w4a16_matmul` would run for x [..., K] on this layer, without running it: the path and its tiles (the
    gluon path: its consumer warpgroups). The kernel benchmark records it with each W4A16 point."""
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    N = qweight.shape[1]
    cfg, _, explicit = _resolve(x2, qweight, scales, zeros, g_idx, group_size, bits, x2.shape[0], N, K, path,
                                {name: tiles.get(name) for name in TILE_ARGS}, glu)
    if cfg["path"] == "gluon":
        from kernels import w4a16_gluon

        c, bm = w4a16_gluon.tiles(x2.shape[0], N, *_gluon_args(cfg, path, explicit, consumers))
        return {"path": "gluon", "consumers": c, "block_m": bm}
    return {name: v for name, v in cfg.items() if name in CONFIG_KEYS}


def w4a16_matmul_triton(x, qweight, scales, zeros, g_idx, group_size: int, bits: int, bias=None, *,
                        path: str | None = None, block_m: int | None = None, block_n: int | None = None,
                        block_k: int | None = None, split_k: int | None = None, num_warps: int | None = None,
                        num_stages: int | None = None, use_dot: bool | None = None,
                        reduce_rows: bool | None = None, swap_ab: bool | None = None,
                        spread_x: bool | None = None, permute_x: bool | None = None,
                        stream_k: int | None = None, consumers: int | None = None, validate: bool = True,
                        glu: bool = False) -> torch.Tensor:
    """Fused dequantise + GEMM in Triton; x [M, K] 2-D. Unset path/tiles come from `default_config`.
    glu: W's columns alternate gate, up (`interleave_glu`); returns silu(gate) * up [M, N / 2], computed in the
    gemv's epilogue (the decode path), after the GEMM on the others (`glu_ref`).

    path: gemv (M <= 4, 4-bit, contiguous groups: one LOP3 + one FMA per weight and row, `_w4a16_gemv_kernel`;
    spread_x: at M = 1 the activations are loaded spread over the lanes),
    skinny (M <= 16: one program holds all rows, split-K; use_dot picks tl.dot over code planes, default
    for M > 4, or CUDA-core FMAs, M <= 8), tiled (tl.dot tiles of BLOCK_M rows), planes (4-bit, contiguous
    groups, 16-bit x: W^T @ x^T per code plane, `_w4a16_planes_kernel`), frag (4-bit, K and groups multiples
    of 128, 16-bit x with scales of its dtype: x permuted into MMA-fragment order so each word's code pairs are
    wgmma's register A operand, `_w4a16_frag_kernel`; permute_x: in the kernel, not by a copy of x; stream_k = c:
    c programs per SM share the tiles' K-blocks equally, instead of split_k), dequant
    (W dequantized by a Triton kernel into x's dtype, then one cuBLAS GEMM: large M), or gluon (Hopper,
    4-bit fp16 layers, symmetric or with zero codes: the warp-specialised Gluon kernel, `kernels.w4a16_gluon`;
    consumers: its 1 or 2 consumer warpgroups; tuned or explicit, its own tiles, an error names what it does not
    take). Split-K on the gemv, skinny and frag paths reduces in the same launch through a reusable workspace
    (`_splitk_workspace`)."""
    if triton is None:
        raise RuntimeError("w4a16: Triton is not installed: pip install 'quantbench[gpu]' or use backend='torch'")
    if not x.is_cuda and not _interpreted():
        raise ValueError("w4a16: the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if x.dim() != 2 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"w4a16: x {tuple(x.shape)} {x.dtype}: expected fp16/bf16/fp32 [M, K]")
    M, K = x.shape
    N = _check(K, qweight, scales, zeros, g_idx, group_size, bits, bias, values=validate)
    if max(x.numel(), M * N, qweight.numel() * (32 // bits)) >= 2**31:
        raise ValueError(f"w4a16: M={M}, N={N}, K={K} is too large for the kernel's int32 offsets (< 2^31 elements)")
    cfg, gluon_checked, explicit = _resolve(x, qweight, scales, zeros, g_idx, group_size, bits, M, N, K, path, dict(
        block_m=block_m, block_n=block_n, block_k=block_k, split_k=split_k, num_warps=num_warps,
        num_stages=num_stages, use_dot=use_dot, reduce_rows=reduce_rows, swap_ab=swap_ab, spread_x=spread_x,
        permute_x=permute_x, stream_k=stream_k), glu)
    if cfg["path"] not in PATHS:
        raise ValueError(f"w4a16: path={cfg['path']!r}; use one of {list(PATHS)}")
    if cfg["path"] == "gluon":
        from kernels import w4a16_gluon

        if not gluon_checked:  # path='gluon' asked for
            why = w4a16_gluon.unsupported(x, qweight, scales, zeros, g_idx, group_size, bits)
            if why or glu:
                raise ValueError(f"w4a16: path='gluon' cannot run this call: {why or 'glu=True'}; use path='frag'")
            if explicit.keys() - {"block_m"}:
                raise ValueError(f"w4a16: path='gluon' picks its own tiles but block_m (its token tile); drop "
                                 f"{sorted(explicit.keys() - {'block_m'})}")
        c, tokens = _gluon_args(cfg, path, explicit, consumers)
        return w4a16_gluon.w4a16_matmul_gluon(x, qweight, scales, group_size, bias, c, zeros=zeros, tokens=tokens)
    if consumers is not None:
        raise ValueError(f"w4a16: consumers={consumers} is the gluon path's option (path={cfg['path']!r})")
    if cfg["path"] == "gemv":
        gs_ = K if group_size == -1 else group_size
        if bits != 4 or g_idx is not None or M > GEMV_MAX_M or gs_ % cfg["block_k"] or cfg["block_k"] < 8:
            raise ValueError(f"w4a16: the gemv path serves 4-bit codes in contiguous groups (no g_idx) with "
                             f"M <= {GEMV_MAX_M} and block_k dividing the group size; got bits={bits}, M={M}, "
                             f"g_idx={'set' if g_idx is not None else None}, group_size={group_size}, "
                             f"block_k={cfg['block_k']}: use path='skinny'")
    if cfg["path"] == "skinny" and M > SKINNY_MAX_M:
        raise ValueError(f"w4a16: the skinny path serves M <= {SKINNY_MAX_M} rows, got M={M}; use path='tiled'")
    names = ("block_m", "block_n", "block_k") if cfg["path"] in ("tiled", "planes", "frag") else ("block_n", "block_k")
    for name in names:
        if not _pow2(cfg[name]) or cfg[name] < 16:
            raise ValueError(f"w4a16: {name}={cfg[name]} must be a power of two >= 16 (tl.dot tiles)")
    if cfg["split_k"] < 1:
        raise ValueError(f"w4a16: split_k={cfg['split_k']} must be >= 1")
    if glu and N % 2:
        raise ValueError(f"w4a16: glu=True needs an even N (interleaved gate and up columns), got N={N}")
    if M == 0 or N == 0:
        return torch.zeros((M, N // 2 if glu else N), dtype=x.dtype, device=x.device)
    if glu and cfg["path"] != "gemv":
        tiles = {k: v for k, v in cfg.items() if k in CONFIG_KEYS}
        return glu_ref(w4a16_matmul_triton(x, qweight, scales, zeros, g_idx, group_size, bits, bias,
                                           validate=False, **tiles))
    gs = K if group_size == -1 else group_size
    x = x.contiguous()
    g = g_idx.to(torch.int32).contiguous() if g_idx is not None else qweight
    emulate = _interpreted() and x.dtype == torch.bfloat16
    # 16-bit dequantisation (`_dequant_half`) where s and zs are x's 16-bit dtype (stored, or symmetric 2^(bits-1) * s);
    # fp32 otherwise, zero codes included (their z * s is exact only in fp32)
    zmode = _zeros_mode(zeros)
    deq16 = (x.dtype in (torch.float16, torch.bfloat16) and scales.dtype == x.dtype
             and (zmode == 2 or zeros.dtype == x.dtype))
    z_arg = scales if zeros is None else zeros.contiguous()  # symmetric: never read
    launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    if cfg["path"] == "dequant":
        w = torch.empty((K, N), dtype=x.dtype, device=x.device)
        wr = cfg["block_k"] // (32 // bits)
        if wr < 1 or cfg["block_k"] % (32 // bits):
            raise ValueError(f"w4a16: block_k={cfg['block_k']} must be a multiple of {32 // bits}")
        grid = (_cdiv(K // (32 // bits), wr), _cdiv(N, cfg["block_n"]))
        _w4a16_dequant_kernel[grid](qweight.contiguous(), scales.contiguous(), z_arg, g, w, N, K, gs,
                                    BITS=bits, HAS_GIDX=g_idx is not None, ZMODE=zmode, EMULATE_BF16=emulate,
                                    BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], **launch)
        if bias is None:
            return x @ w
        return torch.addmm(bias.to(x.dtype), x, w)
    if cfg["path"] == "gemv":
        bk = cfg["block_k"]
        k_split = _cdiv(_cdiv(K, bk), cfg["split_k"]) * bk
        split = _cdiv(K, k_split)
        tiles = _cdiv(N, cfg["block_n"])
        y = torch.empty((M, N // 2 if glu else N), dtype=x.dtype, device=x.device)
        ws, counters = _splitk_workspace(x.device, M * N, tiles) if split > 1 else (y, y)
        pdl = _use_pdl(x.device)
        if pdl:
            launch["launch_pdl"] = True
        _w4a16_gemv_kernel[(tiles, split)](
            x, qweight.contiguous(), scales.contiguous(), z_arg,
            bias.contiguous() if bias is not None else y, y, ws, counters, M, N, K, gs, k_split, split,
            x.stride(0), y.stride(0), ZMODE=zmode, HAS_BIAS=bias is not None,
            EVEN=N % cfg["block_n"] == 0 and K % bk == 0,
            REDUCE_ROWS=cfg.get("reduce_rows", cfg["num_warps"] == 1),
            SPREAD_X=bool(cfg.get("spread_x")) and M == 1, EMULATE_BF16=emulate, PDL=pdl,
            PREFETCH_BLOCKS=GEMV_PDL_PREFETCH_BLOCKS, TRIGGER_LATE=GEMV_PDL_TRIGGER_LATE, GLU=glu,
            BLOCK_M=1 if M == 1 else (2 if M == 2 else 4), BLOCK_N=cfg["block_n"], BLOCK_K=bk, **launch)
        return y
    split = cfg["split_k"]
    if cfg["path"] == "planes":
        bk = cfg["block_k"]
        if bits != 4 or g_idx is not None or gs % bk or K % bk or bk < 128 or x.dtype == torch.float32:
            raise ValueError(f"w4a16: the planes path serves 4-bit codes in contiguous groups (no g_idx) of 16-bit "
                             f"x, K and the group size multiples of block_k >= 128 (16 word rows a plane: one "
                             f"tl.dot K step); got bits={bits}, g_idx={'set' if g_idx is not None else None}, "
                             f"x {x.dtype}, K={K}, group_size={gs}, block_k={bk}; use path='tiled'")
        y = torch.empty((M, N), dtype=x.dtype, device=x.device) if split == 1 else \
            torch.zeros((M, N), dtype=torch.float32, device=x.device)
        xp = _plane_major(x, bk)
        _w4a16_planes_kernel[(_cdiv(M, cfg["block_m"]), _cdiv(N, cfg["block_n"]), split)](
            xp, qweight.contiguous(), scales.contiguous(), z_arg,
            bias.contiguous() if bias is not None else y, y, M, N, K, gs, xp.stride(0), y.stride(0), ZMODE=zmode,
            HAS_BIAS=bias is not None, SPLIT_K=split, EMULATE_BF16=emulate, DEQ16=deq16, BLOCK_M=cfg["block_m"],
            BLOCK_N=cfg["block_n"], BLOCK_K=bk, **launch)
        return y if split == 1 else y.to(x.dtype)
    if cfg["path"] == "frag":
        why = frag_supported(x.dtype, K, N, scales, zeros, g_idx, group_size, bits)
        if why is not None:
            raise ValueError(f"w4a16: the frag path serves {why}; use path='tiled'")
        bm, bn = cfg["block_m"], cfg["block_n"]
        k_split = _cdiv(_cdiv(K, 128), cfg["split_k"]) * 128
        split = _cdiv(K, k_split)
        n_tiles = _cdiv(N, bn)
        tiles = n_tiles * _cdiv(M, bm)
        stream_k = int(cfg.get("stream_k") or 0)
        if stream_k < 0:
            raise ValueError(f"w4a16: stream_k={stream_k} must be >= 0 (programs per SM; 0: off)")
        if stream_k:  # G programs, each a run of the tiles x K-blocks units (no more programs than units)
            sms = _num_sms(x.device.index or 0) if x.is_cuda else 4
            grid = (min(stream_k * sms, tiles * (K // 128)),)
        else:
            grid = (tiles, split)
        y = torch.empty((M, N), dtype=x.dtype, device=x.device)
        ws, counters = _splitk_workspace(x.device, M * N, tiles) if stream_k or split > 1 else (y, y)
        # permute_x: x^T [128, BLOCK_M] read in natural order and permuted in registers (one shared-memory round
        # trip a K-block) instead of a copy of x in fragment order, a second kernel: for decode-sized tiles, where
        # that copy is a few percent of the call
        permute_x = bool(cfg.get("permute_x", False))
        xf = x if permute_x else _fragment_order(x)
        _w4a16_frag_kernel[grid](
            xf, qweight.contiguous(), scales.contiguous(), z_arg, bias.contiguous() if bias is not None else y, y,
            ws, counters, M, N, K, gs, k_split, split, n_tiles, tiles, xf.stride(0), y.stride(0), ZMODE=zmode,
            HAS_BIAS=bias is not None, EVEN_N=N % bn == 0, EVEN_M=M % bm == 0, ASM=not _interpreted(),
            EMULATE_BF16=emulate, PERMUTE_X=permute_x, STREAM_K=stream_k > 0,
            Z_WORDS=_frag_zero_words(zmode, z_arg, N, bm, bn, cfg["num_warps"]),
            BLOCK_M=bm, BLOCK_N=bn, **launch)
        return y
    scale_row = g_idx is None and gs % cfg["block_k"] == 0
    if cfg["path"] == "skinny":
        use_dot = cfg.get("use_dot", M > 4)
        if not use_dot and M > 8:
            raise ValueError(f"w4a16: the skinny path without tl.dot serves M <= 8 rows (its accumulator grows "
                             f"with M), got M={M}; use use_dot=True")
        if use_dot and cfg["block_k"] // (32 // bits) < 16:
            raise ValueError(f"w4a16: the skinny path with M > 4 uses tl.dot over code planes: block_k must be "
                             f">= {16 * (32 // bits)} for {bits}-bit codes, got {cfg['block_k']}")
        y = torch.empty((M, N), dtype=x.dtype, device=x.device)  # split-K reduces in-kernel (kernels.splitk)
        ws, counters = _splitk_workspace(x.device, M * N, _cdiv(N, cfg["block_n"])) if split > 1 else (y, y)
        common = (x, qweight.contiguous(), scales.contiguous(), z_arg, g,
                  bias.contiguous() if bias is not None else y, y, ws, counters, M, N, K, gs)
        _w4a16_skinny_kernel[(_cdiv(N, cfg["block_n"]), split)](
            *common, split, x.stride(0), y.stride(0), BITS=bits, HAS_GIDX=g_idx is not None, ZMODE=zmode,
            SCALE_ROW=scale_row, HAS_BIAS=bias is not None, USE_DOT=use_dot, EMULATE_BF16=emulate, DEQ16=deq16,
            BLOCK_M=16 if use_dot else max(1, 1 << (M - 1).bit_length()), BLOCK_N=cfg["block_n"],
            BLOCK_K=cfg["block_k"], **launch)
        return y
    else:
        y = torch.empty((M, N), dtype=x.dtype, device=x.device) if split == 1 else \
            torch.zeros((M, N), dtype=torch.float32, device=x.device)
        common = (x, qweight.contiguous(), scales.contiguous(), z_arg, g,
                  bias.contiguous() if bias is not None else y, y, M, N, K, gs)
        grid = (_cdiv(M, cfg["block_m"]), _cdiv(N, cfg["block_n"]), split)
        _w4a16_kernel[grid](
            *common, x.stride(0), y.stride(0),
            BITS=bits, HAS_GIDX=g_idx is not None, ZMODE=zmode, SCALE_ROW=scale_row, HAS_BIAS=bias is not None,
            SPLIT_K=split,
            EMULATE_BF16=emulate, DEQ16=deq16, SWAP_AB=bool(cfg.get("swap_ab", False)), BLOCK_M=cfg["block_m"],
            BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], **launch)
    return y if split == 1 else y.to(x.dtype)


def w4a16_matmul(x, qweight, scales, zeros, g_idx, group_size: int, bits: int, bias=None, *, backend: str = "auto",
                 validate: bool = True, glu: bool = False, **tile) -> torch.Tensor:
    """y = x [..., K] @ W (+ bias). backend: auto (Triton for CUDA tensors, torch otherwise), 'triton' or 'torch'.
    glu: W's columns alternate gate, up (`interleave_glu`); returns silu(gate) * up [..., N / 2].

    validate=False skips the checks that sync the GPU (g_idx range, finite scales/zeros); shapes are always checked.
    """
    if backend == "auto":
        backend = "triton" if x.is_cuda and triton is not None else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"w4a16: backend={backend!r}; use auto, triton or torch")
    if backend == "torch":
        return w4a16_matmul_ref(x, qweight, scales, zeros, g_idx, group_size, bits, bias, validate=validate, glu=glu)
    if x.dim() < 1:
        raise ValueError(f"w4a16: x {tuple(x.shape)}: expected [..., K]")
    K = x.shape[-1]
    y = w4a16_matmul_triton(x.reshape(-1, K), qweight, scales, zeros, g_idx, group_size, bits, bias,
                            validate=validate, glu=glu, **tile)
    return y.reshape(*x.shape[:-1], y.shape[1])


@torch.library.custom_op("quantbench::w4a16_matmul", mutates_args=())
def w4a16_matmul_op(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                    g_idx: torch.Tensor | None, bias: torch.Tensor | None, group_size: int, bits: int,
                    backend: str, glu: bool = False) -> torch.Tensor:
    """`w4a16_matmul` (validate=False, default tiles) as one opaque torch op, for torch.compile: traced as a call
    with a known output shape, so a compiled model fuses what lies between its linears without graph breaks in
    the Python around the Triton launch (tuned-table lookups, the split-K workspace)."""
    return w4a16_matmul(x, qweight, scales, zeros, g_idx, group_size, bits, bias, backend=backend, validate=False,
                        glu=glu)


@w4a16_matmul_op.register_fake
def _w4a16_matmul_fake(x, qweight, scales, zeros, g_idx, bias, group_size, bits, backend, glu=False):
    return x.new_empty((*x.shape[:-1], qweight.shape[1] // 2 if glu else qweight.shape[1]))
