"""Split-KV decode attention (flash-decoding): one query token per sequence against a static KV cache.

At decode, attention has one query row per head, so kernels that parallelize over (batch, head, query block) run
batch x heads programs: 32 on an H100 with 132 SMs at batch 1 (cuDNN's flash kernel took 8.3 us a layer to read
5.2 MB of a 320-slot Llama-2-7B cache, `results/h100/decode_profile_20261127_calls17-18.log`). Here the keys are
split too: program (sequence, head, split) runs an online softmax over its slice of keys and writes its partial
(running max m, sum l, unnormalized output acc); the last split of a (sequence, head) to finish combines the
splits with their log-sum-exp weights, in the same launch (an arrival counter per (sequence, head), from the
split-K workspace of `kernels.splitk`, left zero again). A second launch cost about as much as the split kernel
saved (H100 call 24: 0.182 ms of split kernels and 0.058 ms of combine kernels a 32-layer step). Grouped-query
attention maps query head h to KV head h // (H / H_kv).

Layouts (as transformers passes them to an attention function): q [B, H, 1, D], k and v [B, H_kv, N, D] (any
strides, the last dim contiguous), an optional boolean mask [B, 1, 1, N] (True: attend) that hides the cache slots
not written yet; output [B, 1, H, D] in q's dtype (transformers' attention output layout). `decode_attention_ref`
is the plain-torch reference (SDPA).
"""

from __future__ import annotations

import torch

from kernels.launch import cdiv as _cdiv
from kernels.launch import interpreted as _interpreted
from kernels.launch import use_pdl as _use_pdl
from kernels.splitk import workspace as _splitk_workspace
from kernels.tuning import num_sms

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference still works
    triton = None


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # interpreted: a few splits, so tests cover the combine
    return num_sms(device.index if device.index is not None else torch.cuda.current_device())


def decode_attention_ref(q, k, v, mask=None, scale: float | None = None) -> torch.Tensor:
    """SDPA on the same inputs (GQA by repeating KV heads), in fp32; output [B, 1, H, D] in q's dtype."""
    B, H, _, D = q.shape
    rep = H // k.shape[1]
    kf, vf = (t.float().repeat_interleave(rep, dim=1) for t in (k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q.float(), kf, vf, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).to(q.dtype)


def check_inputs(q, k, v, mask=None) -> str | None:
    """Why these inputs are not ones the kernel serves, or None."""
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        return f"shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected [B, H, 1, D] and [B, H_kv, N, D]"
    B, H, L, D = q.shape
    if L != 1:
        return f"{L} query tokens: the kernel serves decode (one query token per sequence)"
    if k.shape[2] < 1:
        return "an empty KV cache"
    if max(t.numel() for t in (q, k, v)) >= 2**31:
        return "more than 2^31 elements in q, k or v (the kernel's offsets are int32)"
    if k.shape[0] != B or k.shape[3] != D or H % k.shape[1]:
        return f"q {tuple(q.shape)} and k {tuple(k.shape)} do not match (batch, head dim, or H not a multiple of H_kv)"
    if D & (D - 1) or D < 16 or D > 256:
        return f"head dim {D}: the kernel takes powers of two from 16 to 256"
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        return "q, k and v need a contiguous last dim"
    if mask is not None and (mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1
                             or mask.shape[0] not in (1, B) or mask.shape[3] != k.shape[2]):
        return f"mask {tuple(mask.shape)} {mask.dtype}: the kernel takes a boolean [B, 1, 1, N] key mask"
    return None


if triton is not None:
    from kernels.launch import pdl_wait as _pdl_wait
    from kernels.splitk import last_arrival as _last_arrival

    @triton.jit
    def _decode_attn_split_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, part_ptr, cnt_ptr, o_ptr, H, G, N, chunk, scale,
                                  sqb, sqh, skb, skh, skn, svb, svh, svn, smb, smn, sob, soh,
                                  HAS_MASK: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                                  BLOCK_S: tl.constexpr, PDL: tl.constexpr):
        # program (b * H + h, split): online softmax over keys [split * chunk, +chunk); writes m, l, acc[D]; the
        # last split of (b, h) to arrive combines them into o. PDL (programmatic dependent launch): waits for the
        # kernels before it first (everything it reads, q, the cache, the counters, they write)
        if PDL:
            _pdl_wait()
        bh = tl.program_id(0)
        s = tl.program_id(1)
        b = bh // H
        h = bh % H
        hk = h // G
        rd = tl.arange(0, D)
        q = tl.load(q_ptr + b * sqb + h * sqh + rd).to(tl.float32) * scale
        m = tl.max(tl.full([BLOCK_N], -1.0e30, tl.float32), axis=0)
        l = tl.sum(tl.zeros([BLOCK_N], tl.float32), axis=0)
        acc = tl.zeros([D], tl.float32)
        lo = s * chunk
        hi = tl.minimum(N, lo + chunk)
        for n0 in range(lo, hi, BLOCK_N):
            rn = n0 + tl.arange(0, BLOCK_N)
            ok = rn < hi
            if HAS_MASK:
                ok = ok & (tl.load(mask_ptr + b * smb + rn * smn, mask=ok, other=0) != 0)
            kt = tl.load(k_ptr + b * skb + hk * skh + rn[:, None] * skn + rd[None, :], mask=ok[:, None], other=0.0)
            scores = tl.where(ok, tl.sum(kt.to(tl.float32) * q[None, :], axis=1), -1.0e30)
            m_new = tl.maximum(m, tl.max(scores, axis=0))
            alpha = tl.exp(m - m_new)
            p = tl.where(ok, tl.exp(scores - m_new), 0.0)
            vt = tl.load(v_ptr + b * svb + hk * svh + rn[:, None] * svn + rd[None, :], mask=ok[:, None], other=0.0)
            acc = acc * alpha + tl.sum(p[:, None] * vt.to(tl.float32), axis=0)
            l = l * alpha + tl.sum(p, axis=0)
            m = m_new
        splits = tl.num_programs(1)
        o = o_ptr + b * sob + h * soh + rd
        if splits == 1:  # no combine: out = acc / l
            tl.store(o, (acc / tl.where(l > 0, l, 1.0)).to(o_ptr.dtype.element_ty))  # no visible key: 0, as SDPA
        else:
            # partials [B * H, splits, D + 2]: acc, then m, then l
            base = part_ptr + (bh * splits + s) * (D + 2)
            tl.store(base + rd, acc)
            tl.store(base + D, m)
            tl.store(base + D + 1, l)
            if _last_arrival(cnt_ptr, bh, splits):
                _decode_attn_combine(part_ptr + bh * splits * (D + 2), o, splits, D, BLOCK_S)

    @triton.jit
    def _decode_attn_combine(base, o, splits, D: tl.constexpr, BLOCK_S: tl.constexpr):
        # o = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s over the partials at base
        rs = tl.arange(0, BLOCK_S)
        rd = tl.arange(0, D)
        s_ok = rs < splits
        m = tl.load(base + rs * (D + 2) + D, mask=s_ok, other=-1.0e30, cache_modifier=".cg")
        l = tl.load(base + rs * (D + 2) + D + 1, mask=s_ok, other=0.0, cache_modifier=".cg")
        acc = tl.load(base + rs[:, None] * (D + 2) + rd[None, :], mask=s_ok[:, None], other=0.0, cache_modifier=".cg")
        w = tl.where(s_ok, tl.exp(m - tl.max(m, axis=0)), 0.0)
        total = tl.sum(w * l, axis=0)
        out = tl.sum(w[:, None] * acc, axis=0) / tl.where(total > 0, total, 1.0)  # no visible key: 0, as SDPA
        tl.store(o, out.to(o.dtype.element_ty))


# Launch shape: one-warp programs over 16-key blocks, about 8 per SM. On the H100 at batch 1 (Llama-2-7B heads,
# 32 caches back to back, .ci/gpu/attention_sweep.py, call 31) this took 6.2 us a layer over 320 cache slots and
# 16.1 us over 2048, against 9.4 and 30.4 us with 4-warp programs over 32-key blocks, 2 per SM.
BLOCK_N, NUM_WARPS, PROGRAMS_PER_SM = 16, 1, 8


def split_count(B: int, H: int, N: int, device: torch.device, block_n: int = BLOCK_N) -> int:
    """Key splits so that B x H x splits programs number about PROGRAMS_PER_SM per SM (>= block_n keys each)."""
    return max(1, min(_cdiv(N, block_n), _cdiv(PROGRAMS_PER_SM * _num_sms(device), B * H)))


def decode_attention_triton(q, k, v, mask=None, scale: float | None = None, splits: int | None = None,
                            block_n: int = BLOCK_N, num_warps: int = NUM_WARPS) -> torch.Tensor:
    """Split-KV attention of one query token per sequence (layouts in the module docstring); [B, 1, H, D]."""
    if triton is None:
        raise RuntimeError("decode attention: Triton is not installed; use decode_attention_ref")
    if not q.is_cuda and not _interpreted():
        raise ValueError("decode attention: the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    why = check_inputs(q, k, v, mask)
    if why is not None:
        raise ValueError(f"decode attention: {why}")
    B, H, _, D = q.shape
    N = k.shape[2]
    splits = splits or split_count(B, H, N, q.device, block_n)
    chunk = _cdiv(_cdiv(N, splits), block_n) * block_n
    splits = _cdiv(N, chunk)
    part = torch.empty((B * H, splits, D + 2), dtype=torch.float32, device=q.device)
    out = torch.empty((B, 1, H, D), dtype=q.dtype, device=q.device)
    counters = _splitk_workspace(q.device, 1, B * H)[1]  # also for one split: one compiled variant
    m = mask if mask is not None else q
    smb = mask.stride(0) if mask is not None and mask.shape[0] > 1 else 0
    smn = mask.stride(3) if mask is not None else 0
    launch = {} if _interpreted() else {"num_warps": num_warps}
    pdl = _use_pdl(q.device)
    if pdl:
        launch["launch_pdl"] = True
    _decode_attn_split_kernel[(B * H, splits)](
        q, k, v, m, part, counters, out, H, H // k.shape[1], N, chunk,
        float(scale if scale is not None else D ** -0.5), q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        k.stride(2), v.stride(0), v.stride(1), v.stride(2), smb, smn, out.stride(0), out.stride(2),
        HAS_MASK=mask is not None, D=D, BLOCK_N=block_n, BLOCK_S=max(2, triton.next_power_of_2(splits)), PDL=pdl,
        **launch)
    return out


@torch.library.custom_op("quantbench::decode_attention", mutates_args=())
def decode_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                        scale: float) -> torch.Tensor:
    """`decode_attention_triton` as one opaque op, so torch.compile traces it without graph breaks."""
    return decode_attention_triton(q, k, v, mask, scale)


@decode_attention_op.register_fake
def _decode_attention_fake(q, k, v, mask, scale):
    return q.new_empty((q.shape[0], 1, q.shape[1], q.shape[3]))
