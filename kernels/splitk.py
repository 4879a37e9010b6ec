"""Split-K reduction inside one launch, shared by the decode kernels (W4A16 and FP8 GEMVs, split-KV attention): a
reusable fp32 workspace and arrival counters that the kernels leave zero again, so a split-K call needs no memset
and no second kernel (at decode sizes each launch costs about as much as the bytes)."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the workspace helper still imports
    triton = None

_WORKSPACES: dict = {}
_RETIRED: list = []  # outgrown workspaces: CUDA graphs captured with them still read and write them


def workspace(device: torch.device, numel: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 partial sums [>= numel] and arrival counters [>= tiles], all zero, that split-K kernels leave zero
    again (`splitk_finish`): kept per device and reused, so a call needs no memset. Kernels on one stream run
    one after another, so one workspace serves them all; while a CUDA graph is being captured a too-small
    workspace is not replaced (that would capture an allocation the eager calls never see): the call gets a
    fresh zeroed one of its own (a captured memset). An outgrown workspace is kept, not freed, since graphs
    captured with it replay into it."""
    key = (device.type, device.index)
    ws = _WORKSPACES.get(key)
    if ws is not None and ws[0].numel() >= numel and ws[1].numel() >= tiles:
        return ws
    fresh = (torch.zeros(max(numel, ws[0].numel() if ws else 0), dtype=torch.float32, device=device),
             torch.zeros(max(tiles, ws[1].numel() if ws else 0), dtype=torch.int32, device=device))
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return fresh
    if ws is not None:
        _RETIRED.append(ws)  # never freed: a graph captured earlier may replay with it
    _WORKSPACES[key] = fresh
    return fresh


if triton is not None:

    @triton.jit
    def round_to_bf16(v):
        # nearest bf16 (ties to even), kept in fp32: add half an ulp at bit 16, clear the 16 low mantissa bits
        b = v.to(tl.int32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
        return b.to(tl.float32, bitcast=True)

    @triton.jit
    def last_arrival(cnt_ptr, index, count):
        """True in the last of `count` programs to arrive at counter `index`, which it leaves zero again for the
        next launch. Ordering: every thread's earlier stores, a CTA barrier, then one thread's release/acquire
        add, so the last program sees what all of them stored (read it with .cg loads, past L1)."""
        tl.debug_barrier()
        last = tl.atomic_add(cnt_ptr + index, 1, sem="acq_rel") == count - 1
        if last:
            tl.store(cnt_ptr + index, 0)
        return last

    @triton.jit
    def _as_stored(v, y_ptr, EMULATE_BF16: tl.constexpr):
        # v rounded to y's dtype, kept in fp32
        if EMULATE_BF16:
            return round_to_bf16(v)
        return v.to(y_ptr.dtype.element_ty).to(tl.float32)

    @triton.jit
    def store_y(total, rm, rn, m_ok, n_ok, y_ptr, N, stride_ym, EMULATE_BF16: tl.constexpr, GLU: tl.constexpr):
        """Store a finished fp32 tile [BLOCK_M, BLOCK_N] of y in y's dtype. GLU: the tile's columns alternate
        gate, up (an interleaved gate_up layer, `kernels.w4a16.interleave_glu`); what is stored is
        silu(gate) * up, [BLOCK_M, BLOCK_N / 2] at columns rn // 2 of y [M, N / 2], each op rounded to y's dtype
        as the unfused model rounds its bf16 gate, up, silu and product."""
        if GLU:
            gate, up = tl.split(tl.reshape(total, (total.shape[0], total.shape[1] // 2, 2)))
            cols, _ = tl.split(tl.reshape(rn, (rn.shape[0] // 2, 2)))
            cols = cols // 2
            gate = _as_stored(gate, y_ptr, EMULATE_BF16)
            act = _as_stored(gate * tl.sigmoid(gate), y_ptr, EMULATE_BF16)
            out = _as_stored(act * _as_stored(up, y_ptr, EMULATE_BF16), y_ptr, EMULATE_BF16)
            tl.store(y_ptr + rm[:, None] * stride_ym + cols[None, :], out.to(y_ptr.dtype.element_ty),
                     mask=m_ok[:, None] & (cols < N // 2)[None, :])
        else:
            if EMULATE_BF16:
                total = round_to_bf16(total)
            tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], total.to(y_ptr.dtype.element_ty),
                     mask=m_ok[:, None] & n_ok[None, :])

    @triton.jit
    def tile_store(acc, rm, rn, m_ok, n_ok, ws_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, index, count,
                   HAS_BIAS: tl.constexpr, EMULATE_BF16: tl.constexpr, GLU: tl.constexpr = False):
        """One of `count` fp32 partial tiles [BLOCK_M, BLOCK_N] of y. count == 1: bias added and stored in y's
        dtype. Otherwise every partial is added into the workspace; the last to arrive at counter `index` (an
        acq_rel counter per tile, `last_arrival`) adds the bias, writes y in its dtype (`store_y`) and zeroes
        its workspace tile and counter again, so the next call finds them clean (no memset, no cast kernel)."""
        if count == 1:
            if HAS_BIAS:
                acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            store_y(acc, rm, rn, m_ok, n_ok, y_ptr, N, stride_ym, EMULATE_BF16, GLU)
        else:
            mask = m_ok[:, None] & n_ok[None, :]
            ws = ws_ptr + rm[:, None] * N + rn[None, :]
            tl.atomic_add(ws, acc, mask=mask, sem="relaxed")
            if last_arrival(cnt_ptr, index, count):
                total = tl.load(ws, mask=mask, other=0.0, cache_modifier=".cg")
                # every thread has read the sums before any clears them: Triton lays the load and the clearing
                # store out differently (sm_90 TTGIR, triton 3.6: #blocked2 and #blocked1), so without the barrier
                # a thread could zero a sum another thread has yet to read. The H100 got split-K frag results wrong
                # in 1-5 runs of 100 without it (ninth session, `.ci/gpu/splitk_stress.py`), in 0 of 300 with it
                # (tenth session, call 1).
                tl.debug_barrier()
                if HAS_BIAS:
                    total += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
                store_y(total, rm, rn, m_ok, n_ok, y_ptr, N, stride_ym, EMULATE_BF16, GLU)
                tl.store(ws, tl.zeros_like(total), mask=mask)

    @triton.jit
    def splitk_store(acc, rm, rn, m_ok, n_ok, ws_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, split_k,
                     HAS_BIAS: tl.constexpr, EMULATE_BF16: tl.constexpr, GLU: tl.constexpr = False):
        """A split-K kernel's fp32 tile of y, one of the split_k partials of the N-tile program_id(0)
        (`tile_store`)."""
        tile_store(acc, rm, rn, m_ok, n_ok, ws_ptr, cnt_ptr, b_ptr, y_ptr, N, stride_ym, tl.program_id(0), split_k,
                   HAS_BIAS, EMULATE_BF16, GLU)
