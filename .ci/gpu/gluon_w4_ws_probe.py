"""A warp-specialised Gluon W4A16 GEMM (eleventh session probe; nothing in the harness calls it): the structure of
`kernels/fp8_gluon.py` with the frag path's register dequantisation (`gluon_frag_probe._dequant`). Symmetric 4-bit
GPTQ codes, groups of 128, fp16 x in fragment order (`kernels.w4a16._fragment_order`), K a multiple of 256, N of 128.

y^T tile [128, BM] = W^T [128 rows of N, K] @ x^T [K, BM]: a 1-warp loader streams x tiles [BM, 128] by TMA into a
ring (ready/empty mbarriers); two consumer warpgroups own 64 weight rows each, load packed words a block pair
ahead, dequantise each K-block into the wgmma A registers while the previous block's wgmmas run
(`warpgroup_mma_wait(1, deps=(acc, a))`), and release x slots as their wgmmas retire.

    python3 .ci/gpu/gluon_w4_ws_probe.py sass [BM SLOTS]          # CPU: waits, spills, A-register hazards
    python3 .ci/gpu/gluon_w4_ws_probe.py run [BM SLOTS [M ...]]   # GPU: against w4a16_matmul_ref, graph-timed
                                                                 # beside the tuned W4A16 and cuBLAS fp16
                                                                 # ($SHAPES="KxN ...", $NC consumers: 1)"""

import os
import re
import sys

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from gluon_frag_probe import _dequant, _words  # noqa: E402
from gluon_rs_probe import words_layout  # noqa: E402


@gluon.jit
def _loader(x_desc, xs, ready, empty, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, m0, n0):
    slots: gl.constexpr = xs.shape[0]
    for b in range(K // 128):
        slot = b % slots
        mbarrier.wait(empty.index(slot), ((b // slots) & 1) ^ 1)
        bar = ready.index(slot)
        mbarrier.expect(bar, x_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(x_desc, [m0, b * 128], bar, xs.index(slot))


@gluon.jit
def _consume(x_desc, xs, ready, empty, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, m0, n0, HALF: gl.constexpr):
    BM: gl.constexpr = x_desc.block_type.shape[0]
    slots: gl.constexpr = xs.shape[0]
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BM, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    wl: gl.constexpr = words_layout(gl.to_linear_layout(a_l, [64, 128]))
    r0 = n0 + HALF * 64
    rn_w = r0 + gl.arange(0, 64, layout=gl.SliceLayout(1, wl))
    rw = gl.arange(0, 16, layout=gl.SliceLayout(0, wl))
    rn_a = r0 + gl.arange(0, 64, layout=gl.SliceLayout(1, a_l))
    nb = K // 128
    we, se = _words(qw_ptr, s_ptr, 0, nb, N, rn_w, rw, rn_a)
    wo, so = _words(qw_ptr, s_ptr, 1, nb, N, rn_w, rw, rn_a)
    acc = gl.zeros([64, BM], gl.float32, mma)
    a_o = gl.zeros([64, 128], gl.float16, a_l)
    for e in range(0, nb, 2):  # blocks e and e + 1; on entry block e - 1's wgmmas may still run
        a_e = _dequant(we, se, 64, a_l)
        we, se = _words(qw_ptr, s_ptr, e + 2, nb, N, rn_w, rw, rn_a)
        mbarrier.wait(ready.index(e % slots), (e // slots) & 1)
        acc = warpgroup_mma(a_e, xs.index(e % slots).permute((1, 0)), acc, is_async=True)
        acc, a_o = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_o))  # block e - 1 retired
        mbarrier.arrive(empty.index((e + slots - 1) % slots), pred=e > 0)
        a_o = _dequant(wo, so, 64, a_l)
        wo, so = _words(qw_ptr, s_ptr, e + 3, nb, N, rn_w, rw, rn_a)
        mbarrier.wait(ready.index((e + 1) % slots), ((e + 1) // slots) & 1)
        acc = warpgroup_mma(a_o, xs.index((e + 1) % slots).permute((1, 0)), acc, is_async=True)
        acc, a_e = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_e))  # block e retired
        mbarrier.arrive(empty.index(e % slots))
    acc, a_o = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_o))
    ym = m0 + gl.arange(0, BM, layout=gl.SliceLayout(0, mma))
    yn = r0 + gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
    gl.store(y_ptr + ym[None, :] * stride_ym + yn[:, None], acc.to(gl.float16), mask=(ym < M)[None, :])


@gluon.jit
def _consume0(x_desc, xs, ready, empty, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, m0, n0):
    _consume(x_desc, xs, ready, empty, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, m0, n0, 0)


@gluon.jit
def _consume1(x_desc, xs, ready, empty, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, m0, n0):
    _consume(x_desc, xs, ready, empty, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, m0, n0, 1)


@gluon.jit
def w4_ws_kernel(x_desc, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, SLOTS: gl.constexpr, NC: gl.constexpr,
                 num_warps: gl.constexpr):
    BM: gl.constexpr = x_desc.block_type.shape[0]
    xs = gl.allocate_shared_memory(gl.float16, [SLOTS, BM, 128], x_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(SLOTS):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=NC)
    m0 = gl.program_id(0) * BM  # M tiles fastest: consecutive programs share a W tile in L2
    n0 = gl.program_id(1) * (64 * NC)
    args = (x_desc, xs, ready, empty, qw_ptr, s_ptr, y_ptr, M, N, K, stride_ym, m0, n0)
    if NC == 2:
        gl.warp_specialize([(_consume0, args), (_consume1, args), (_loader, args)], [4, 1], [232, 24])
    else:  # one consumer warpgroup (64 weight rows), 240 registers a thread for the whole kernel
        gl.warp_specialize([(_consume0, args), (_loader, args)], [1], [24])


def _layout(bm: int):
    return gl.NVMMASharedLayout.get_default_for([bm, 128], gl.float16)


NC = int(os.environ.get("NC", 1))  # consumer warpgroups
MAXNREG = 168 if NC == 2 else 240


def compiled(bm: int, slots: int):
    from kernels.sass import build

    sig = {"x_desc": f"tensordesc<fp16[{bm}, 128],{_layout(bm)!r}>", "qw_ptr": "*i32", "s_ptr": "*fp16",
           "y_ptr": "*fp16", "M": "i32", "N": "i32", "K": "i32", "stride_ym": "i32"}
    return build(w4_ws_kernel, sig, {"SLOTS": slots, "NC": NC, "num_warps": 4},
                 ("qw_ptr", "s_ptr", "y_ptr", "N", "K", "stride_ym"), 4, maxnreg=MAXNREG)


def launch(xf, qweight, scales, y, bm, slots):
    M, K = xf.shape
    N = qweight.shape[1]
    x_desc = TensorDescriptor.from_tensor(xf, [bm, 128], _layout(bm))
    return w4_ws_kernel[(triton.cdiv(M, bm), N // (64 * NC))](x_desc, qweight, scales, y, M, N, K, y.stride(0),
                                                               SLOTS=slots, NC=NC, num_warps=4, maxnreg=MAXNREG)


def main(argv) -> None:
    bm, slots = (int(v) for v in (argv[1:3] or (256, 3)))
    m_values = [int(v) for v in argv[3:]] or [128, 256, 512, 1024]
    if argv[0] == "sass":
        from kernels.sass import disassemble, opcodes, wgmma_a_hazards

        c = compiled(bm, slots)
        text = disassemble(c.asm["cubin"])
        stats = {}
        hazards = wgmma_a_hazards(text, stats)
        waits = sorted(set(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", text)))
        ops = opcodes(text.splitlines())
        print(f"BM {bm}, {slots} slots: waits {waits}, {len(hazards)} A-register hazards ({stats}), spills "
              f"{ops['STL'] + ops['LDL']}, shared {c.metadata.shared} B, HGMMA {ops['HGMMA']}")
        return
    import torch

    from kernels import w4a16
    from kernels.timing import interleaved_time_ms, l2_flush_buffer
    from kernels.w4a16_tune import MAX_REL_ERR, random_layer, rel_err

    flush = l2_flush_buffer(torch.device("cuda"))
    shapes = [tuple(int(v) for v in s.split("x")) for s in os.environ.get("SHAPES", "").split()] or [
        (8192, 57344), (8192, 8192), (4096, 4096), (28672, 8192)]
    for K, N in shapes:
        qweight, scales = random_layer(K, N, "cuda")
        for M in m_values:
            x = torch.randn(M, K, device="cuda", dtype=torch.float16)
            ref = w4a16.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4, validate=False)
            xf = w4a16._fragment_order(x)
            y = torch.empty(M, N, device="cuda", dtype=torch.float16)
            errs = []
            for _ in range(10):
                y.zero_()
                launch(xf, qweight, scales, y, bm, slots)
                errs.append(rel_err(y, ref))
            worst = float(torch.tensor(errs).max())
            wf = torch.randn(K, N, device="cuda", dtype=torch.float16)
            peers = [lambda: launch(xf, qweight, scales, y, bm, slots),
                     lambda: (w4a16._fragment_order(x), launch(xf, qweight, scales, y, bm, slots)),
                     lambda: w4a16.w4a16_matmul(x, qweight, scales, None, None, 128, 4, validate=False),
                     lambda: x @ wf]
            t = interleaved_time_ms(peers, 3, 20, flush)
            print(f"K={K} N={N} M={M}: {'PASS' if worst < MAX_REL_ERR else 'FAIL'} rel err {worst:.1e}; gluon ws "
                  f"{t[0][0] * 1e3:.1f} us ({t[1][0] * 1e3:.1f} with the x copy), tuned W4A16 {t[2][0] * 1e3:.1f}, "
                  f"cuBLAS fp16 {t[3][0] * 1e3:.1f}; gluon+copy / fp16 {t[3][0] / t[1][0]:.2f}x, tuned / fp16 "
                  f"{t[3][0] / t[2][0]:.2f}x", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
