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

On the CPU with triton 3.6 (128 x 128, 8 warps): depth 1 compiles to WARPGROUP.DEPBAR.LE gsb0, 0x1 after each
block's wgmmas, the two blocks' A in distinct registers (R88-R119, R120-R151), and no hazards."""

import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait


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
        acc = warpgroup_mma(a_even, xs.index(0), acc, is_async=True)
        # the odd block's wgmmas (previous iteration) retire here; a_odd stays alive until they have
        acc, a_odd = warpgroup_mma_wait(num_outstanding=WAIT_DEPTH, deps=(acc, a_odd))
        a_odd = gl.load(w_ptr + rn[:, None] * K + (k + 128 + rk)[None, :]) * 2.0
        xs.index(1).store(gl.load(x_ptr + (k + 128 + xk)[:, None] * BM + xm[None, :]))
        fence_async_shared()
        acc = warpgroup_mma(a_odd, xs.index(1), acc, is_async=True)
        acc, a_even = warpgroup_mma_wait(num_outstanding=WAIT_DEPTH, deps=(acc, a_even))
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    ym = gl.arange(0, BM, layout=gl.SliceLayout(0, mma))
    yn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, mma))
    gl.store(y_ptr + yn[:, None] * BM + ym[None, :], acc)


def sass(depth: int, bn: int, bm: int, warps: int) -> str:
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    sig = {"w_ptr": "*fp16", "x_ptr": "*fp16", "y_ptr": "*fp32", "K": "i32"}
    ce = {"WAIT_DEPTH": depth, "BN": bn, "BM": bm, "num_warps": warps}
    src = GluonASTSource(fn=rs_kernel, signature=sig | {k: "constexpr" for k in ce}, constexprs=ce,
                         attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(c.asm["cubin"])
        f.flush()
        return subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout


def main(argv) -> None:
    if argv[0] == "sass":
        from kernels.sass import wgmma_a_hazards

        bn, bm, warps = (int(v) for v in (argv[1:4] or (128, 128, 8)))
        for depth in (0, 1):
            text = sass(depth, bn, bm, warps)
            waits = sorted(set(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", text)))
            print(f"depth {depth}: waits {waits}; hazards {len(wgmma_a_hazards(text))}")
        return
    import torch

    from kernels.timing import graph_time_ms, l2_flush_buffer

    vals = [int(v) for v in argv[1:6]]
    N, K, bm = vals[:3]
    bn, warps = vals[3:5] or (128, 8)
    w = torch.randn(N, K, device="cuda", dtype=torch.float16)
    x = torch.randn(K, bm, device="cuda", dtype=torch.float16)
    ref = (2 * w.float()) @ x.float()
    flush = l2_flush_buffer(torch.device("cuda"))
    for depth in (0, 1):
        y = torch.empty(N, bm, device="cuda", dtype=torch.float32)

        def run():
            rs_kernel[(N // bn,)](w, x, y, K, WAIT_DEPTH=depth, BN=bn, BM=bm, num_warps=warps)

        errs = []
        for _ in range(50):
            y.zero_()
            run()
            errs.append(((y - ref).norm() / ref.norm()).item())
        ms = graph_time_ms(run, 3, 30, flush)[0]
        print(f"depth {depth}: rel err max {max(errs):.1e} over 50 runs; {ms * 1e3:.1f} us "
              f"({2 * N * K * bm / ms / 1e9:.0f} TFLOP/s)")


if __name__ == "__main__":
    main(sys.argv[1:])
