"""A Gluon version of the frag W4A16 kernel (tenth session: compiled for sm_90 on the CPU only, NOT yet run on a
GPU; nothing in the harness calls it). Symmetric 4-bit codes, fp16 x, groups of 128, K a multiple of 256, N of BN.

y^T tile [BN, BM] = W^T [BN, K] @ x^T [K, BM] as in `kernels/w4a16.py`'s frag path (x in fragment order), with what
Triton 3.6 cannot express there: two K-blocks an iteration, each block's A dequantized in the wgmma A registers
(`gluon_rs_probe.words_layout`) while the other block's wgmmas run, `warpgroup_mma_wait(1, deps=(acc, a))`
keeping the running wgmma's A alive (the register-A race of the ninth session, `kernels.sass.wgmma_a_hazards`).
x tiles stream through a ring of 4 shared-memory slots by cp.async, three blocks ahead (past the last block the copies
are masked: zero-fill into free slots); packed words and scales are loaded into registers a block pair ahead.

    python3 .ci/gpu/gluon_frag_probe.py sass [BM BN WARPS]   # CPU: waits, hazards, spills, loop instructions
    python3 .ci/gpu/gluon_frag_probe.py run [BM BN WARPS [M ...]]  # GPU: against w4a16_matmul_ref on Llama shapes
                                                              # (M = 128-1024 by default), graph-timed beside the
                                                              # tuned W4A16 and cuBLAS fp16

Built with triton 3.6 on the CPU: 128 x 128 / 8 warps (the default) waits with DEPBAR.LE gsb0, 0x1, has no
A-register hazard among its 16 register-A wgmmas, no spills, 128 KB of shared memory and 502 loop instructions for
two K-blocks (the Triton frag kernel: 267 for one). The decode tiles (BM = 16-32 tokens, 128 rows / 4 warps or
256 / 8) compile without spills at ~2.9 instructions a weight, like the Triton decode tiles. 4-warp tiles with 64+
tokens and larger tiles spill (and the 128 x 128 / 4-warp one
falls back to waiting on each block); 256-row x tiles need 256 KB for the 4-slot ring, past the H100's 227 KB."""

import os
import re
import sys

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as cp
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

sys.path.insert(0, os.path.dirname(__file__))
from gluon_rs_probe import words_layout  # noqa: E402

from kernels.w4a16_gluon import _dequant  # noqa: E402


@gluon.jit
def _issue_x(x_ptr, xs, blk, nb, rm, xk, m_ok, stride_xm):
    """cp.async of x's K-block `blk` (rows rm, columns 128 blk + xk) into ring slot blk % 4; one commit group
    (empty past the last block, so the group count stays regular)."""
    ok = m_ok[:, None] & (blk < nb)
    cp.async_copy_global_to_shared(xs.index(blk % 4), x_ptr + rm[:, None] * stride_xm + (blk * 128 + xk)[None, :],
                                   mask=ok)
    cp.commit_group()


@gluon.jit
def _words(qw_ptr, s_ptr, blk, nb, N, rn_w, rw, rn_a):
    """A K-block's packed words [BN, 16] (words layout) and scale row [BN] (A rows); zeros past the last block."""
    ok = blk < nb
    words = gl.load(qw_ptr + (blk * 16 + rw)[None, :] * N + rn_w[:, None], mask=ok & (rw < 16)[None, :], other=0)
    s = gl.load(s_ptr + blk * N + rn_a, mask=ok & (rn_a >= 0), other=0.0)
    return words, s


@gluon.jit
def gluon_frag_kernel(x_ptr, qw_ptr, s_ptr, y_ptr, M, N, K, stride_xm, stride_ym, BN: gl.constexpr,
                      BM: gl.constexpr, num_warps: gl.constexpr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BM, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    wl: gl.constexpr = words_layout(gl.to_linear_layout(a_l, [BN, 128]))
    xl: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [num_warps, 1], [1, 0])  # 16 B a thread, rows of 256 B
    xsl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BM, 128], gl.float16)
    xs = gl.allocate_shared_memory(gl.float16, [4, BM, 128], xsl)
    n0 = gl.program_id(1) * BN
    m0 = gl.program_id(0) * BM
    rn_w = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, wl))
    rw = gl.arange(0, 16, layout=gl.SliceLayout(0, wl))
    rn_a = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, a_l))
    rm = m0 + gl.arange(0, BM, layout=gl.SliceLayout(1, xl))
    xk = gl.arange(0, 128, layout=gl.SliceLayout(0, xl))
    m_ok = rm < M
    nb = K // 128
    for b in gl.static_range(3):  # x three blocks ahead
        _issue_x(x_ptr, xs, b, nb, rm, xk, m_ok, stride_xm)
    we, se = _words(qw_ptr, s_ptr, 0, nb, N, rn_w, rw, rn_a)
    wo, so = _words(qw_ptr, s_ptr, 1, nb, N, rn_w, rw, rn_a)
    acc = gl.zeros([BN, BM], gl.float32, mma)
    a_o = gl.zeros([BN, 128], gl.float16, a_l)
    nz = gl.full([BN], -1032.0, gl.float16, gl.SliceLayout(1, a_l))  # -(1024 + 8): the symmetric zero
    for e in range(0, nb, 2):  # blocks e (even) and e + 1 (odd); the odd block's wgmmas of e - 1 are running
        a_e = _dequant(we, se, nz, BN, a_l)
        we, se = _words(qw_ptr, s_ptr, e + 2, nb, N, rn_w, rw, rn_a)
        cp.wait_group(2)  # x block e has landed (e + 1 and e + 2 may still be in flight)
        fence_async_shared()
        gl.thread_barrier()
        acc = warpgroup_mma(a_e, xs.index(e % 4).permute((1, 0)), acc, is_async=True)
        acc, a_o = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_o))  # block e - 1 retired: its slot is free
        gl.thread_barrier()  # ... in both warpgroups (each reads the whole x tile) before it is overwritten
        _issue_x(x_ptr, xs, e + 3, nb, rm, xk, m_ok, stride_xm)
        a_o = _dequant(wo, so, nz, BN, a_l)
        wo, so = _words(qw_ptr, s_ptr, e + 3, nb, N, rn_w, rw, rn_a)
        cp.wait_group(2)
        fence_async_shared()
        gl.thread_barrier()
        acc = warpgroup_mma(a_o, xs.index((e + 1) % 4).permute((1, 0)), acc, is_async=True)
        acc, a_e = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_e))  # block e retired
        gl.thread_barrier()
        _issue_x(x_ptr, xs, e + 4, nb, rm, xk, m_ok, stride_xm)
    acc, a_o = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_o))  # a_o alive until its wgmmas retire
    cp.wait_group(0)
    ym = m0 + gl.arange(0, BM, layout=gl.SliceLayout(0, mma))
    yn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, mma))
    gl.store(y_ptr + ym[None, :] * stride_ym + yn[:, None], acc.to(gl.float16), mask=(ym < M)[None, :])


def compiled(bm: int, bn: int, warps: int):
    from kernels.sass import build

    sig = {"x_ptr": "*fp16", "qw_ptr": "*i32", "s_ptr": "*fp16", "y_ptr": "*fp16", "M": "i32", "N": "i32",
           "K": "i32", "stride_xm": "i32", "stride_ym": "i32"}
    return build(gluon_frag_kernel, sig, {"BN": bn, "BM": bm, "num_warps": warps},
                 ("x_ptr", "qw_ptr", "s_ptr", "y_ptr", "N", "K", "stride_xm", "stride_ym"), warps)


def main(argv) -> None:
    bm, bn, warps = (int(v) for v in (argv[1:4] or (128, 128, 8)))
    m_values = [int(v) for v in argv[4:]] or [128, 200, 256, 512, 1024]  # 200: a partial M tile
    if argv[0] == "sass":
        from kernels.sass import disassemble, loop_mix, opcodes, wgmma_a_hazards

        c = compiled(bm, bn, warps)
        text = disassemble(c.asm["cubin"])
        stats = {}
        hazards = wgmma_a_hazards(text, stats)
        ops, loop = opcodes(text.splitlines()), loop_mix(text)
        waits = sorted(set(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", text)))
        print(f"{bm} x {bn} / {warps} warps: waits {waits}, {len(hazards)} A-register hazards ({stats}), "
              f"spills {ops['STL'] + ops['LDL']}, shared memory {c.metadata.shared} B, loop {sum(loop.values())} "
              f"instructions: HGMMA {loop['HGMMA']}, LOP3 {loop['LOP3']}, HFMA2 {loop['HFMA2']}, "
              f"HMUL2 {loop['HMUL2']}, SHFL {loop['SHFL']}, BAR {loop['BAR']}")
        for h in hazards[:5]:
            print("  ", h)
        return
    import torch

    from kernels import w4a16
    from kernels.timing import interleaved_time_ms, l2_flush_buffer
    from kernels.sass import disassemble, wgmma_a_hazards
    from kernels.w4a16_tune import MAX_REL_ERR, random_layer, rel_err

    flush = l2_flush_buffer(torch.device("cuda"))
    for K, N in ((8192, 57344), (8192, 8192), (4096, 4096)):
        qweight, scales = random_layer(K, N, "cuda")
        for M in m_values:
            x = torch.randn(M, K, device="cuda", dtype=torch.float16)
            ref = w4a16.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4, validate=False)
            xf = w4a16._fragment_order(x)
            y = torch.empty(M, N, device="cuda", dtype=torch.float16)

            def ours():
                return gluon_frag_kernel[(triton.cdiv(M, bm), N // bn)](
                    xf, qweight, scales, y, M, N, K, xf.stride(0), y.stride(0), BN=bn, BM=bm, num_warps=warps)

            errs = []
            for _ in range(20):
                y.zero_()
                kernel = ours()
                errs.append(rel_err(y, ref))
            worst = float(torch.tensor(errs).max())  # NaN stays NaN (Python's max would skip it)
            stats = {}
            hazards = wgmma_a_hazards(disassemble(kernel.asm["cubin"]), stats)  # the binary that ran
            wf = torch.randn(K, N, device="cuda", dtype=torch.float16)
            peers = [ours, lambda: (w4a16._fragment_order(x), ours()),  # ours alone; with the copy of x it needs
                     lambda: w4a16.w4a16_matmul(x, qweight, scales, None, None, 128, 4, validate=False),
                     lambda: x @ wf]  # the committed table's W4A16 choice, cuBLAS fp16
            t = interleaved_time_ms(peers, 3, 20, flush)
            print(f"K={K} N={N} M={M}: {'PASS' if worst < MAX_REL_ERR else 'FAIL'} rel err max {worst:.1e} (20 runs), "
                  f"{len(hazards)} A-register hazards in the run binary ({stats['register_a_wgmmas']} wgmmas); "
                  f"gluon {t[0][0] * 1e3:.1f} us ({t[1][0] * 1e3:.1f} with the x copy), tuned W4A16 "
                  f"{t[2][0] * 1e3:.1f} us, cuBLAS fp16 {t[3][0] * 1e3:.1f} us; timers {[r[3] for r in t]}",
                  flush=True)

if __name__ == "__main__":
    main(sys.argv[1:])
