"""Can a register-A wgmma overlap the next K-block's A in Triton 3.6? Gluon (triton.experimental.gluon) exposes
the wgmma wait: `warpgroup_mma_wait(num_outstanding, deps)` leaves `num_outstanding` groups in flight and keeps
`deps` (the A operand of a wgmma still running) alive until it returns. With two K-blocks a loop iteration, each
block's A computed while the other block's wgmmas run, ptxas gets no chance to reuse a running wgmma's registers.

Prototype (tenth session): y^T [N, BM] = (2 W^T) [N, K] @ x^T [K, BM], the "2 *" standing in for dequantization,
one program per BN rows. WAIT_DEPTH = 0 retires each block's wgmmas before the next block's A is made (what the
Triton frag kernel must do, `kernels/w4a16.py`); 1 leaves them running beside it.

    python3 .ci/gpu/gluon_rs_probe.py sass [BN BM WARPS]     # CPU: sm_90 SASS of both depths, wait lines and
                                                             # `kernels.sass.wgmma_a_hazards`
    python3 .ci/gpu/gluon_rs_probe.py run N K BM [BN WARPS]  # GPU: against torch (many runs), then both depths
                                                             # graph-timed in one process
    python3 .ci/gpu/gluon_rs_probe.py layout                 # CPU: the frag A operand made in its registers
    python3 .ci/gpu/gluon_rs_probe.py check-a                # GPU: that A operand against torch

On the CPU with triton 3.6 (128 x 128, 8 warps): depth 1 compiles to WARPGROUP.DEPBAR.LE gsb0, 0x1 after each
block's wgmmas, the two blocks' A in distinct registers (R88-R119, R120-R151), and no hazards."""

import os
import re
import sys

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


@gluon.jit
def rs_kernel(w_ptr, x_ptr, y_ptr, K, WAIT_DEPTH: gl.constexpr, BN: gl.constexpr, BM: gl.constexpr,
              num_warps: gl.constexpr):
    """W^T [N, K] and x^T [K, BM] row-major, y^T [N, BM] fp32; K a multiple of 256."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BM, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    xl: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([128, BM], gl.float16)
    xs = gl.allocate_shared_memory(gl.float16, [2, 128, BM], sl)
    n0 = gl.program_id(0) * BN
    rn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, a_l))
    rk = gl.arange(0, 128, layout=gl.SliceLayout(0, a_l))
    xk = gl.arange(0, 128, layout=gl.SliceLayout(1, xl))
    xm = gl.arange(0, BM, layout=gl.SliceLayout(0, xl))
    acc = gl.zeros([BN, BM], gl.float32, mma)
    a_odd = gl.zeros([BN, 128], gl.float16, a_l)
    for k in range(0, K, 256):
        a_even = gl.load(w_ptr + rn[:, None] * K + (k + rk)[None, :]) * 2.0
        xs.index(0).store(gl.load(x_ptr + (k + xk)[:, None] * BM + xm[None, :]))
        fence_async_shared()
        gl.thread_barrier()  # every warp's part of the tile is written before either warpgroup's wgmma reads it
        acc = warpgroup_mma(a_even, xs.index(0), acc, is_async=True)
        # the odd block's wgmmas (previous iteration) retire here; a_odd stays alive until they have
        acc, a_odd = warpgroup_mma_wait(num_outstanding=WAIT_DEPTH, deps=(acc, a_odd))
        gl.thread_barrier()  # ... in both warpgroups, before slot 1 is overwritten
        a_odd = gl.load(w_ptr + rn[:, None] * K + (k + 128 + rk)[None, :]) * 2.0
        xs.index(1).store(gl.load(x_ptr + (k + 128 + xk)[:, None] * BM + xm[None, :]))
        fence_async_shared()
        gl.thread_barrier()
        acc = warpgroup_mma(a_odd, xs.index(1), acc, is_async=True)
        acc, a_even = warpgroup_mma_wait(num_outstanding=WAIT_DEPTH, deps=(acc, a_even))
        gl.thread_barrier()  # both warpgroups' even-block wgmmas retired before slot 0 is overwritten
    acc, a_odd = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_odd))  # a_odd alive until its wgmmas retire
    ym = gl.arange(0, BM, layout=gl.SliceLayout(0, mma))
    yn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, mma))
    gl.store(y_ptr + yn[:, None] * BM + ym[None, :], acc)


from kernels.w4a16_gluon import words_layout  # noqa: E402,F401  (the probes' frag A layout, now in kernels)


@gluon.jit
def frag_a_kernel(qw_ptr, s_ptr, out_ptr, N, BN: gl.constexpr, BM: gl.constexpr, num_warps: gl.constexpr):
    """One K-block's W^T [BN, 128] in fragment order, made in the A operand's registers: words loaded in
    `words_layout`, codes joined into half pairs (one LOP3 a register), permuted and reshaped to [BN, 128], and a
    conversion to the A layout that must be trivial (assert_trivial), then scaled ((magic + q - 1032) * s, one
    HFMA2 a register: symmetric codes)."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BM, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    wl: gl.constexpr = words_layout(gl.to_linear_layout(a_l, [BN, 128]))
    rn = gl.arange(0, BN, layout=gl.SliceLayout(1, wl))
    rw = gl.arange(0, 16, layout=gl.SliceLayout(0, wl))
    words = gl.load(qw_ptr + rw[None, :] * N + rn[:, None])
    w4 = gl.reshape(words, (BN, 4, 4))  # [n, s_hi, c]
    t = gl.join(gl.join(w4, w4 >> 4), gl.join(w4 >> 8, w4 >> 12))  # [n, s_hi, c, h, s_lo]: word >> 4j, j = h + 2 s_lo
    h = gl.inline_asm_elementwise("lop3.b32 $0, $1, 0x000F000F, 0x64006400, 0xea;", "=r,r,r", [gl.join(t, t)],
                                  dtype=gl.float16, is_pure=True, pack=2)  # [.., e]: nibbles j and j + 4 as halves
    a = gl.convert_layout(gl.reshape(gl.permute(h, (0, 1, 4, 3, 2, 5)), (BN, 128)), a_l, assert_trivial=True)
    rs = gl.arange(0, BN, layout=gl.SliceLayout(1, a_l))
    s = gl.broadcast(gl.expand_dims(gl.load(s_ptr + rs), 1), a)[0]
    nzz = gl.full([BN, 128], -1032.0, gl.float16, a_l)  # -(1024 + 8): the magic and the symmetric zero
    a = gl.inline_asm_elementwise("{ .reg .b32 d, one; mov.b32 one, 0x3C003C00; fma.rn.f16x2 d, $1, one, $2; "
                                  "mul.rn.f16x2 $0, d, $3; }", "=r,r,r,r", [a, nzz, s], dtype=gl.float16,
                                  is_pure=True, pack=2)
    rk = gl.arange(0, 128, layout=gl.SliceLayout(0, a_l))
    gl.store(out_ptr + rs[:, None] * 128 + rk[None, :], a)


def sass(depth: int, bn: int, bm: int, warps: int) -> str:
    from kernels.sass import build, disassemble

    return disassemble(build(rs_kernel, {"w_ptr": "*fp16", "x_ptr": "*fp16", "y_ptr": "*fp32", "K": "i32"},
                             {"WAIT_DEPTH": depth, "BN": bn, "BM": bm, "num_warps": warps},
                             ("w_ptr", "x_ptr", "y_ptr", "K"), warps).asm["cubin"])


def frag_a_sass(bn: int, bm: int, warps: int) -> tuple[str, str]:
    """(TTGIR, SASS) of `frag_a_kernel` for sm_90; compiling at all means the conversion to A was trivial."""
    from kernels.sass import build, disassemble

    c = build(frag_a_kernel, {"qw_ptr": "*i32", "s_ptr": "*fp16", "out_ptr": "*fp16", "N": "i32"},
              {"BN": bn, "BM": bm, "num_warps": warps}, num_warps=warps)
    return c.asm["ttgir"], disassemble(c.asm["cubin"])


def main(argv) -> None:
    if argv[0] == "layout":  # CPU: the A operand made from words in its own registers, for each tile
        from kernels.sass import opcodes

        for bn, bm, warps in ((128, 128, 8), (128, 128, 4), (64, 128, 4), (256, 128, 8), (128, 256, 8),
                              (128, 16, 4)):
            ttgir, text = frag_a_sass(bn, bm, warps)
            ops = opcodes(text.splitlines())
            regs = bn * 128 // 2 // (32 * warps)  # 32-bit A registers a thread
            print(f"{bn} x {bm} / {warps} warps: trivial conversion, {ttgir.count('local_alloc')} shared-memory "
                  f"buffers, {ops['SHFL']} SHFL; per A register {ops['LOP3'] / regs:.2f} LOP3, "
                  f"{ops['HFMA2'] / regs:.2f} HFMA2, {ops['HMUL2'] / regs:.2f} HMUL2")
        return
    if argv[0] == "check-a":  # GPU: the A operand against torch, fragment order
        import torch

        from kernels import w4a16

        N = 4096
        codes = torch.randint(0, 16, (128, N), device="cuda", dtype=torch.int32)
        qw = w4a16.pack_int_weights(codes, 4)
        s = (torch.rand(N, device="cuda") * 0.01 + 0.001).half()
        ref = w4a16._fragment_order(((codes.float() - 8) * s.float()).t().contiguous().half())
        for bn, bm, warps in ((128, 128, 8), (128, 128, 4), (64, 128, 4), (256, 128, 8)):
            out = torch.empty(bn, 128, device="cuda", dtype=torch.float16)
            frag_a_kernel[(1,)](qw, s, out, N, BN=bn, BM=bm, num_warps=warps)
            print(f"{bn} x {bm} / {warps} warps: A = fragment-ordered W^T: {torch.equal(out, ref[:bn])}")
        return
    if argv[0] == "sass":
        from kernels.sass import wgmma_a_hazards

        bn, bm, warps = (int(v) for v in (argv[1:4] or (128, 128, 8)))
        for depth in (0, 1):
            text = sass(depth, bn, bm, warps)
            waits = sorted(set(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", text)))
            print(f"depth {depth}: waits {waits}; hazards {len(wgmma_a_hazards(text))}")
        return
    import torch

    from kernels.sass import disassemble, wgmma_a_hazards
    from kernels.timing import graph_time_ms, l2_flush_buffer

    vals = [int(v) for v in argv[1:6]]
    N, K, bm = vals[:3]
    bn, warps = (vals[3:5] + [128, 8][len(vals[3:5]):])
    w = torch.randn(N, K, device="cuda", dtype=torch.float16)
    x = torch.randn(K, bm, device="cuda", dtype=torch.float16)
    ref = (2 * w.float()) @ x.float()
    flush = l2_flush_buffer(torch.device("cuda"))
    for depth in (0, 1):
        y = torch.empty(N, bm, device="cuda", dtype=torch.float32)

        def run():
            return rs_kernel[(N // bn,)](w, x, y, K, WAIT_DEPTH=depth, BN=bn, BM=bm, num_warps=warps)

        errs = []
        for _ in range(50):
            y.zero_()
            kernel = run()
            errs.append(((y - ref).norm() / ref.norm()).item())
        worst = float(torch.tensor(errs).max())  # NaN stays NaN
        stats = {}
        hazards = wgmma_a_hazards(disassemble(kernel.asm["cubin"]), stats)  # the binary that ran
        ms, _, _, timer = graph_time_ms(run, 3, 30, flush)
        print(f"depth {depth}: {'PASS' if worst < 1e-3 else 'FAIL'} rel err max {worst:.1e} over 50 runs, "
              f"{len(hazards)} A-register hazards ({stats['register_a_wgmmas']} wgmmas); {ms * 1e3:.1f} us "
              f"({2 * N * K * bm / ms / 1e9:.0f} TFLOP/s, {timer})")


if __name__ == "__main__":
    main(sys.argv[1:])
