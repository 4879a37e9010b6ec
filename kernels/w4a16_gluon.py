"""W4A16 GEMM for Hopper in Gluon (`triton.experimental.gluon`, Triton >= 3.6), warp-specialised: the structure of
`kernels/fp8_gluon.py` with the frag path's register dequantisation. 4-bit GPTQ/AWQ layers, symmetric or with integer
zero codes [G, N] (uint8/int16), fp16 activations and scales, contiguous groups of a multiple of 128 rows, K a
multiple of 256, N of 64.

y^T tile [BN, BM] = W^T [BN rows of N, K] @ x^T [K, BM] a consumer partition (BN = 64 a warpgroup), x in fragment
order (`kernels.w4a16._fragment_order`):

- a 1-warp loader brings by TMA, into a ring of shared-memory slots (ready/empty mbarriers; `ring_slots`: 3 at 256
  tokens, 5-8 below), each K-block's x tile [BM, 128] and each consumer partition's packed words [16, BN]
  (unswizzled; read in the transposed words layout and permuted in registers, `_smem_words`);
- one consumer warpgroup (`w4a16_ws_kernel`, BM = 64, 128 or 256 tokens, 240 registers), two in step as one
  partition (the same kernel with num_warps = 8: 128 weight rows x 256 tokens, cuBLAS's own tile, 240 registers) or
  two partitions on the same x slots (`w4a16_ws2_kernel`, 64 weight rows each, BM = 64 or 128, 168 registers) load
  their scales (and zero codes) two K-blocks ahead, dequantise each K-block into the wgmma A registers (`_dequant`:
  one LOP3, one HFMA2, one HMUL2 a register pair of weights) while the previous block's wgmmas run
  (`warpgroup_mma_wait(1, deps=(acc, a))`), and release each x slot as its wgmmas retire (one arrival a partition:
  Triton syncs the partition's warps before it, the barrier where the in-step warpgroups wait for each other).

Two partitions at BM = 256 would need more than the 168 registers a thread that 12 warps allow. At BM = 128 their
code fits in 168, but Triton's register reallocation (workers at 120 and 24 outside their partitions) makes ptxas
serialise every wgmma of the worker consumer (C7512), so `_keep_launch_registers` removes it from that kernel's PTX.
Two warpgroups in the default partition keep the reallocation (24 for the loader, 240 for them) without C7512, as the
one-warpgroup kernel does. Every binary waits at depth 1 with no write to an in-flight wgmma's A registers
(tests/test_kernels_w4a16_gluon.py checks them). The binaries a group-128 layer launches (the group count a block
specialised to 1) spill in the epilogue only, after the K loop: 26, 5 and 38 spill stores for one warpgroup at 256
tokens, two partitions at 128 and two warpgroups in step (ptxas 12.8); Nsight Compute counts them once a warp.

Nsight Compute on an H200 (thirteenth session, 8192 x 57344, M = 1024): the two-partition kernel keeps the tensor
pipe 77% busy (cuBLAS fp16: 95%); its words' shared loads conflict 7-way. With the A operand made of nothing (no
words read, no dequantisation) it ran no faster (0.81x cuBLAS fp16): at 128 x 128 tiles the pipeline, not the
dequantisation, binds. 128 x 256 tiles (two warpgroups in step): tensor pipe 80%; 0.78-0.86x cuBLAS fp16 at
M = 1024 and 4096 on four large Llama shapes, 2-6% faster than the 128 x 128 kernel at each (results/h200/README.md).

H100 (`.ci/gpu/gluon_w4_ws_probe.py`, graph-timed beside cuBLAS fp16, the copy of x into fragment order included),
twelfth session, call 8, the faster of one and two consumers over the 11 Llama layer shapes: 0.85-1.45x cuBLAS fp16
at M = 128, 0.64-0.96x at 256, 0.63-0.85x at 512, 0.67-0.80x at 1024 (two consumers; dequantize + cuBLAS
0.75-0.78x in record 20261128T065900Z, another run).
Words by TMA made it 1.04-1.22x faster than loading them from global memory two blocks ahead (one consumer, M <= 256;
two consumers 1.05-1.16x everywhere). `w4a16_matmul(..., path="gluon", consumers=1|2, block_m=64|128|256)`; the
tuner offers both consumer counts at M = 65-4096, 64-token tiles up to M = 128 and 128 x 256 tiles above.
Decode-sized tiles (16 tokens, a TMA ring of 8 slots, 2-3 programs an SM, split-K) ran 1.03-2.6x slower than the
tuned frag path at M = 1 and 16 on an H200 (fourteenth session, results/h200/README.md) and were not kept.
Gluon kernels do not run under TRITON_INTERPRET."""

from __future__ import annotations

import contextlib
import os
import re
from typing import NamedTuple

import torch

try:
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared  # renamed in Triton 3.9
except Exception:  # no Triton, or one without Gluon's Hopper API
    gluon = None

MAXNREG = 240  # one consumer warpgroup and the loader's warpgroup: 8 warps x 240 registers fit the register file
# two consumers: 12 warps at 168 registers fill the register file. Two partitions (BM = 64 or 128) keep them
# (`_keep_launch_registers`); two warpgroups in step (BM = 256) get 240 by Triton's reallocation, the loader 24
MAXNREG_2 = 168
# shared memory for the ring: the H100's 227 KB a block less 8 KB for its mbarriers and the compiler's scratch
SMEM_FOR_RING = 227 * 1024 - 8 * 1024


def block_m(M: int) -> int:
    """Tokens per tile: 256 (the wgmma's widest N) from 129 rows, else 128."""
    return 256 if M > 128 else 128


def unsupported(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros, g_idx, group_size: int,
                bits: int) -> str | None:
    """None if this kernel can run the layer, else why not."""
    if gluon is None:
        return "needs Triton >= 3.6 with Gluon's Hopper API (triton.experimental.gluon)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "Gluon kernels do not run under TRITON_INTERPRET=1"
    if not x.is_cuda or torch.cuda.get_device_capability(x.device)[0] != 9:
        return "needs a Hopper GPU (sm_90: wgmma and TMA)"
    if x.dim() != 2:
        return f"x [M, K], got {tuple(x.shape)}"
    K, N = x.shape[-1], qweight.shape[1]
    gs = K if group_size == -1 else group_size
    if bits != 4 or g_idx is not None:
        return "4-bit layers in contiguous groups (no g_idx)"
    if zeros is not None and zeros.dtype not in (torch.uint8, torch.int16):
        return f"no zero points or integer zero codes (uint8/int16 [G, N]), got {zeros.dtype} zeros"
    if x.dtype != torch.float16 or scales.dtype != torch.float16:
        return f"fp16 activations and scales (x {x.dtype}, scales {scales.dtype})"
    if K % 256 or gs <= 0 or gs % 128 or N % 64:
        return (f"K a multiple of 256, the group size a positive multiple of 128, N of 64 (K={K}, group_size={gs}, "
                f"N={N})")
    return None


if gluon is not None:

    @triton.constexpr_function
    def words_layout(a):
        """Layout of a K-block's packed words [BN, 16] (word i of row n holds rows 8i..8i+7 of W) whose nibbles,
        joined and permuted as the Triton frag kernel does (`kernels/w4a16.py`, fragment order), land in the
        registers of the wgmma A operand `a` (a linear layout of [BN, 128]) with no data movement: A's bases with
        the k bits of e (1), h (8) and s_lo (16) dropped (copies in registers that the joins make) and those of c
        (2, 4) and s_hi (32, 64) turned into word bits 1, 2, 4, 8 (word i = 4 s_hi + c)."""
        to_word = {0: 0, 2: 1, 4: 2, 32: 4, 64: 8}

        def conv(bases, in_registers):
            out = []
            for n, k in bases:
                if k in (1, 8, 16):
                    assert in_registers, "e, h and s_lo must be register bits of the A layout"
                    continue
                out.append([n, to_word[k]])
            return out

        return gl.DistributedLinearLayout(reg_bases=conv(a.reg_bases, True),
                                          lane_bases=conv(a.lane_bases, False),
                                          warp_bases=conv(a.warp_bases, False), block_bases=[],
                                          shape=[a.shape[0], 16])

    @triton.constexpr_function
    def ring_slots(bm, rows):
        """Slots of the loader's ring: as many K-blocks (an x tile of bm tokens, the packed words of `rows` weight
        rows) as fit in SMEM_FOR_RING, at most 8."""
        return min(8, SMEM_FOR_RING // (bm * 128 * 2 + rows * 16 * 4))

    @triton.constexpr_function
    def _transposed(layout):
        """A 2-D linear layout with its two dimensions swapped."""
        swap = lambda bases: [[b[1], b[0]] for b in bases]  # noqa: E731
        return gl.DistributedLinearLayout(reg_bases=swap(layout.reg_bases), lane_bases=swap(layout.lane_bases),
                                          warp_bases=swap(layout.warp_bases), block_bases=[],
                                          shape=[layout.shape[1], layout.shape[0]])

    @gluon.jit
    def _smem_words(tile, wl: gl.constexpr):
        """A K-block's packed words [16, BN] in shared memory (unswizzled, as the loader's TMA wrote them) as the
        words layout's [BN, 16]: read in the transposed layout, then permuted in registers. (Reading the
        permuted shared view directly returned wrong words on the H100, Triton 3.6:
        .ci/gpu/gluon_tma_words_probe.py.)"""
        return gl.convert_layout(gl.permute(tile.load(_transposed(wl)), (1, 0)), wl, assert_trivial=True)

    @gluon.jit
    def _dequant(words, s, nz, BN: gl.constexpr, a_l: gl.constexpr):
        """W^T [BN, 128] of one K-block, fragment order, in the A layout: (1024 + q + nz) * s with nz = -(1024 + z)
        per row (`_zero_row`; exact in fp16), two weights a LOP3, an HFMA2 and an HMUL2 (fp16 0x6400 | q = 1024 +
        q)."""
        w4 = gl.reshape(words, (BN, 4, 4))
        t = gl.join(gl.join(w4, w4 >> 4), gl.join(w4 >> 8, w4 >> 12))
        h = gl.inline_asm_elementwise("lop3.b32 $0, $1, 0x000F000F, 0x64006400, 0xea;", "=r,r,r", [gl.join(t, t)],
                                      dtype=gl.float16, is_pure=True, pack=2)
        a = gl.convert_layout(gl.reshape(gl.permute(h, (0, 1, 4, 3, 2, 5)), (BN, 128)), a_l, assert_trivial=True)
        sb = gl.broadcast(gl.expand_dims(s, 1), a)[0]
        nzz = gl.broadcast(gl.expand_dims(nz, 1), a)[0]
        return gl.inline_asm_elementwise("{ .reg .b32 d, one; mov.b32 one, 0x3C003C00; fma.rn.f16x2 d, $1, one, "
                                         "$2; mul.rn.f16x2 $0, d, $3; }", "=r,r,r,r", [a, nzz, sb],
                                         dtype=gl.float16, is_pure=True, pack=2)

    @gluon.jit
    def _zero_row(z_ptr, blk, nb, N, rn_a, gpb, HAS_Z: gl.constexpr):
        """-(1024 + z) [BN] in fp16 (A rows) for K-block blk: the layer's zero codes [G, N], or the symmetric 8."""
        if HAS_Z:
            z = gl.load(z_ptr + (blk // gpb) * N + rn_a, mask=(blk < nb) & (rn_a >= 0), other=0)
            return (-1024.0 - z.to(gl.float32)).to(gl.float16)
        else:
            return gl.full(rn_a.shape, -1032.0, gl.float16, rn_a.type.layout)

    @gluon.jit
    def _loader(x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K,
                stride_ym, gpb, has_bias, m0, n0, ci):
        """1 warp: into the slot the consumers released, by TMA, K-block b's x tile (rows m0 .., past M as zeros)
        and for each consumer partition its BN columns' packed words [16, BN]."""
        slots: gl.constexpr = xs.shape[0]
        CONS: gl.constexpr = ws.shape[0] // slots
        BN: gl.constexpr = ws.shape[2]
        nbytes: gl.constexpr = x_desc.block_type.nbytes + CONS * w_desc.block_type.nbytes
        for b in range(K // 128):
            slot = b % slots
            mbarrier.wait(empty.index(slot), ((b // slots) & 1) ^ 1)  # a fresh mbarrier counts as released
            bar = ready.index(slot)
            mbarrier.expect(bar, nbytes)
            _tma_load(x_desc, [m0, b * 128], bar, xs.index(slot))
            for c in gl.static_range(CONS):
                _tma_load(w_desc, [b * 16, n0 + BN * c], bar, ws.index(slot * CONS + c))

    @gluon.jit
    def _scale_row(s_ptr, blk, nb, N, rn_a, gpb):
        """Scales [BN] (A rows) of K-block blk (zeros past the last block)."""
        return gl.load(s_ptr + (blk // gpb) * N + rn_a, mask=(blk < nb) & (rn_a >= 0), other=0.0)

    @gluon.jit
    def _consume(x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K,
                 stride_ym, gpb, has_bias, m0, n0, ci, HAS_Z: gl.constexpr):
        """A consumer partition (ci: its index, weight rows n0 .. n0 + BN; BN / 64 warpgroups, 64 rows each): two
        K-blocks an iteration, each block's A made while the other's wgmmas run."""
        BM: gl.constexpr = x_desc.block_type.shape[0]
        slots: gl.constexpr = xs.shape[0]
        CONS: gl.constexpr = ws.shape[0] // slots
        BN: gl.constexpr = ws.shape[2]
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[BN // 16, 1],
                                                      instr_shape=[16, BM, 16])
        a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
        wl: gl.constexpr = words_layout(gl.to_linear_layout(a_l, [BN, 128]))
        rn_a = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, a_l))
        nb = K // 128
        ze = _zero_row(z_ptr, 0, nb, N, rn_a, gpb, HAS_Z)
        zo = _zero_row(z_ptr, 1, nb, N, rn_a, gpb, HAS_Z)
        se = _scale_row(s_ptr, 0, nb, N, rn_a, gpb)
        so = _scale_row(s_ptr, 1, nb, N, rn_a, gpb)
        acc = gl.zeros([BN, BM], gl.float32, mma)
        a_o = gl.zeros([BN, 128], gl.float16, a_l)
        for e in range(0, nb, 2):  # blocks e and e + 1; on entry block e - 1's wgmmas may still run
            mbarrier.wait(ready.index(e % slots), (e // slots) & 1)
            a_e = _dequant(_smem_words(ws.index((e % slots) * CONS + ci), wl), se, ze, BN, a_l)
            ze = _zero_row(z_ptr, e + 2, nb, N, rn_a, gpb, HAS_Z)
            se = _scale_row(s_ptr, e + 2, nb, N, rn_a, gpb)
            acc = warpgroup_mma(a_e, xs.index(e % slots).permute((1, 0)), acc, is_async=True)
            acc, a_o = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_o))  # block e - 1 retired
            mbarrier.arrive(empty.index((e + slots - 1) % slots), pred=e > 0)
            mbarrier.wait(ready.index((e + 1) % slots), ((e + 1) // slots) & 1)
            a_o = _dequant(_smem_words(ws.index(((e + 1) % slots) * CONS + ci), wl), so, zo, BN, a_l)
            zo = _zero_row(z_ptr, e + 3, nb, N, rn_a, gpb, HAS_Z)
            so = _scale_row(s_ptr, e + 3, nb, N, rn_a, gpb)
            acc = warpgroup_mma(a_o, xs.index((e + 1) % slots).permute((1, 0)), acc, is_async=True)
            acc, a_e = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_e))  # block e retired
            mbarrier.arrive(empty.index(e % slots))
        acc, a_o = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_o))  # a_o alive until its wgmmas retire
        ym = m0 + gl.arange(0, BM, layout=gl.SliceLayout(0, mma))
        yn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, mma))
        if has_bias:  # (a runtime flag: the partitions take no constexpr arguments on triton 3.6)
            acc += gl.load(b_ptr + yn).to(gl.float32)[:, None]
        gl.store(y_ptr + ym[None, :].to(gl.int64) * stride_ym + yn[:, None], acc.to(gl.float16),
                 mask=(ym < M)[None, :])

    # the partitions: `_consume` for symmetric layers and for layers with zero codes (partitions take no constexpr
    # arguments on Triton 3.6, so HAS_Z is fixed here)
    @gluon.jit
    def _consume_sym(x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K,
                     stride_ym, gpb, has_bias, m0, n0, ci):
        _consume(x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K,
                 stride_ym, gpb, has_bias, m0, n0, ci, False)

    @gluon.jit
    def _consume_zp(x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K,
                    stride_ym, gpb, has_bias, m0, n0, ci):
        _consume(x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K,
                 stride_ym, gpb, has_bias, m0, n0, ci, True)

    @gluon.jit
    def _program(x_desc, w_desc, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K, stride_ym, gpb, has_bias,
                 CONSUMERS: gl.constexpr, HAS_Z: gl.constexpr):
        """Program (m, n): tokens m BM .. + BM, weight rows BN CONSUMERS n .. (BN: the words tile's width, 16 rows
        a warp of the default partition); M tiles vary fastest, so consecutive programs share a W tile in L2. The
        default partition (num_warps = BN / 16) is consumer 0; the workers: consumer 1 (CONSUMERS = 2: 4 warps, the
        next 64 rows on the same x slots) and the loader (1 warp; 24 registers with one consumer partition, which
        takes the rest; with two, every warp keeps its 168, see `_keep_launch_registers`)."""
        BM: gl.constexpr = x_desc.block_type.shape[0]
        BN: gl.constexpr = w_desc.block_type.shape[1]
        SLOTS_: gl.constexpr = ring_slots(BM, BN * CONSUMERS)
        xs = gl.allocate_shared_memory(gl.float16, [SLOTS_, BM, 128], x_desc.layout)
        ws = gl.allocate_shared_memory(gl.int32, [SLOTS_ * CONSUMERS, 16, BN], w_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [SLOTS_, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [SLOTS_, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(SLOTS_):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=CONSUMERS)  # a slot is free once every consumer released it
        m0 = gl.program_id(0) * BM
        n0 = gl.program_id(1) * (BN * CONSUMERS)
        args = (x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K, stride_ym, gpb,
                has_bias, m0, n0, 0)
        args1 = (x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K, stride_ym, gpb,
                 has_bias, m0, n0 + BN, 1)
        if CONSUMERS == 2:
            if HAS_Z:
                gl.warp_specialize([(_consume_zp, args), (_consume_zp, args1), (_loader, args)], [4, 1], [168, 168])
            else:
                gl.warp_specialize([(_consume_sym, args), (_consume_sym, args1), (_loader, args)], [4, 1],
                                   [168, 168])
        else:
            if HAS_Z:
                gl.warp_specialize([(_consume_zp, args), (_loader, args)], [1], [24])
            else:
                gl.warp_specialize([(_consume_sym, args), (_loader, args)], [1], [24])

    @gluon.jit
    def w4a16_ws_kernel(x_desc, w_desc, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K, stride_ym, gpb, has_bias,
                        HAS_Z: gl.constexpr, num_warps: gl.constexpr):
        """One consumer partition (`_program`): one warpgroup (num_warps = 4, 64 weight rows, launched at MAXNREG)
        or two in step (num_warps = 8, 128 rows, MAXNREG_2: 12 warps, Triton's register reallocation gives the
        consumers 240). HAS_Z: z_ptr holds zero codes [G, N]."""
        _program(x_desc, w_desc, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K, stride_ym, gpb, has_bias, 1, HAS_Z)

    @gluon.jit
    def w4a16_ws2_kernel(x_desc, w_desc, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K, stride_ym, gpb, has_bias,
                         HAS_Z: gl.constexpr, num_warps: gl.constexpr):
        """Two consumer warpgroups on BM = 64 or 128 (`_program`), launched at MAXNREG_2 with its setmaxnreg removed
        (`_keep_launch_registers`)."""
        _program(x_desc, w_desc, s_ptr, z_ptr, y_ptr, b_ptr, M, N, K, stride_ym, gpb, has_bias, 2, HAS_Z)

    def _keep_launch_registers(ptx: str) -> str:
        """w4a16_ws2_kernel's PTX without its setmaxnreg instructions: every warp keeps the 168 registers it was
        launched with. Triton (3.6, 3.9) reallocates registers between the partitions, the idle workers holding 120
        outside their partition, and ptxas then serialises every wgmma of the worker consumer (C7512, "insufficient
        register resources"), though its code fits in 168 with the wgmma wait at depth 1 and no spills (ptxas 12.8,
        `python -m kernels.sass w4a16-gluon --consumers 2 --block-m 128`)."""
        if ".entry w4a16_ws2_kernel(" not in ptx:
            return ptx
        return re.sub(r"[ \t]*setmaxnreg\.(?:inc|dec)\.sync\.aligned\.u32\s+\d+;\n", "", ptx)

    _HOOK_KEY = "quantbench-w4a16_ws2-keep-launch-registers-1"
    _previous_hook = None

    def _stages_hook(*args):
        """Triton's pipeline hook (knobs.runtime.add_stages_inspection_hook): `_keep_launch_registers` after the PTX
        stage, behind the hook that was in place. Triton 3.9 also calls it with no arguments for a cache key (the
        kernel's builds are cached apart from those made without it); 3.6 does not."""
        if not args:
            key, digest = _previous_hook() if _previous_hook is not None else ("", "")
            return key + _HOOK_KEY, digest + _HOOK_KEY
        if _previous_hook is not None:
            _previous_hook(*args)
        stages = args[1]
        if "ptx" in stages:
            make_ptx = stages["ptx"]
            stages["ptx"] = lambda src, metadata: _keep_launch_registers(make_ptx(src, metadata))

    @contextlib.contextmanager
    def launch_registers_kept():
        """`_stages_hook` in place for the launches (and builds) inside: w4a16_ws2_kernel is compiled, and on Triton
        3.9 looked up in the cache, only there. Other kernels never see the hook; the hook found is restored."""
        global _previous_hook
        found = triton.knobs.runtime.add_stages_inspection_hook
        if found is _stages_hook:  # nested
            yield
            return
        _previous_hook = found
        triton.knobs.runtime.add_stages_inspection_hook = _stages_hook
        try:
            yield
        finally:
            triton.knobs.runtime.add_stages_inspection_hook = found
            _previous_hook = None


def _words_layout():
    return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)


def _smem_layout(bm: int):
    return gl.NVMMASharedLayout.get_default_for([bm, 128], gl.float16)


def consumers(M: int, N: int) -> int:
    """Consumer warpgroups a program when the caller names none (the tuner times both): 2 (128 x 128 tiles) where
    they were at least as fast on the H100 for all 11 Llama layer shapes (M >= 512) or on most wide ones (M <= 128,
    N >= 10240), else 1 (twelfth session, call 8, `.ci/gpu/gluon_w4_ws_probe.py`); 2 needs N a multiple of 128."""
    return 2 if N % 128 == 0 and (M >= 512 or (M <= 128 and N >= 10240)) else 1


class LaunchPlan(NamedTuple):
    """How a (consumers, token tile) pair launches: `two_partitions` (w4a16_ws2_kernel, else w4a16_ws_kernel),
    `num_warps` of its default partition, `maxnreg` at launch, the words tile's width (`words`: the weight rows one
    consumer partition's TMA box brings) and the weight rows a program covers (`rows`)."""
    two_partitions: bool
    num_warps: int
    maxnreg: int
    words: int
    rows: int


def launch_plan(n_consumers: int, tokens: int) -> LaunchPlan:
    """One consumer warpgroup: `w4a16_ws_kernel`, 4 warps at MAXNREG (8 warps in all). Two at 256 tokens: the same
    kernel with 8 warps (two warpgroups in step, 128 rows; 12 warps in all at MAXNREG_2, and Triton's reallocation
    gives them 240). Two at 64 or 128 tokens: `w4a16_ws2_kernel`, two partitions of 64 rows."""
    if n_consumers == 1:
        return LaunchPlan(False, 4, MAXNREG, 64, 64)
    if tokens == 256:
        return LaunchPlan(False, 8, MAXNREG_2, 128, 128)
    return LaunchPlan(True, 4, MAXNREG_2, 64, 128)


def tiles(M: int, N: int, n_consumers: int | None = None, tokens: int | None = None) -> tuple[int, int]:
    """(consumer warpgroups, token tile) a call runs: the ones named, else `consumers` and 128 tokens with two,
    `block_m` with one."""
    c = consumers(M, N) if n_consumers is None else n_consumers
    return c, tokens if tokens is not None else 128 if c == 2 else block_m(M)


def w4a16_matmul_gluon(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                       bias: torch.Tensor | None = None, n_consumers: int | None = None, *,
                       zeros: torch.Tensor | None = None, tokens: int | None = None) -> torch.Tensor:
    """y = x @ W (+ bias) for a 4-bit layer (`unsupported` says which), symmetric or with integer zero codes
    [G, N] (4-bit codes, 0-15); x [M, K] fp16. n_consumers: 1 or 2 consumer warpgroups (None: `consumers`);
    tokens: the token tile, 64, 128 or 256 (None: `block_m`, 128 with two consumers). Two consumers with 64 or 128
    tokens run as two partitions (`w4a16_ws2_kernel`), with 256 as one partition of two warpgroups in step
    (`w4a16_ws_kernel`, num_warps = 8: a 128 x 256 tile, as cuBLAS's own).
    The layer's tensor shapes are checked as `w4a16_matmul` checks them (a ValueError names the mismatch)."""
    if n_consumers is not None and (type(n_consumers) is not int or n_consumers not in (1, 2)):
        raise ValueError(f"w4a16 Gluon kernel: consumers={n_consumers!r}; use 1 or 2 (consumer warpgroups)")
    if tokens is not None and tokens not in (64, 128, 256):
        raise ValueError(f"w4a16 Gluon kernel: token tiles of {tokens}; use 64, 128 or 256")
    why = unsupported(x, qweight, scales, zeros, None, group_size, 4)
    if why:
        raise ValueError(f"w4a16 Gluon kernel: {why}; use another path")
    from kernels.w4a16 import _check, _fragment_order

    _check(x.shape[1], qweight, scales, zeros, None, group_size, 4, bias, values=False)

    M, K = x.shape
    N = qweight.shape[1]
    gs = K if group_size == -1 else group_size
    y = torch.empty((M, N), dtype=torch.float16, device=x.device)
    if M == 0 or N == 0:
        return y
    c, bm = tiles(M, N, n_consumers, tokens)
    if N % (64 * c):
        raise ValueError(f"w4a16 Gluon kernel: {c} consumer warpgroups need N a multiple of {64 * c} (N={N}); use "
                         "consumers=1")
    xf = _fragment_order(x.contiguous())
    plan = launch_plan(c, bm)
    x_desc = TensorDescriptor.from_tensor(xf, [bm, 128], _smem_layout(bm))
    w_desc = TensorDescriptor.from_tensor(qweight.contiguous(), [16, plan.words], _words_layout())
    b = bias.contiguous() if bias is not None else y  # any float dtype: the kernel adds it in fp32
    z = zeros.contiguous() if zeros is not None else y  # (not read when HAS_Z is off)
    args = (x_desc, w_desc, scales.contiguous(), z, y, b, M, N, K, y.stride(0), gs // 128, int(bias is not None))
    kernel = w4a16_ws2_kernel if plan.two_partitions else w4a16_ws_kernel
    with launch_registers_kept() if plan.two_partitions else contextlib.nullcontext():
        kernel[(-(-M // bm), N // plan.rows)](*args, HAS_Z=zeros is not None, num_warps=plan.num_warps,
                                              maxnreg=plan.maxnreg)
    return y
