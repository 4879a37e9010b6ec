"""Which shared-memory layout and read make a TMA-loaded tile of packed W words [16, 64] int32 come back right in
Gluon (Triton 3.6)? Each variant TMA-loads one tile, reads it into registers and stores it; the result must equal
the global tile. Twelfth session: the W4A16 kernel with its words brought by TMA into an unswizzled NVMMA tile and
read permuted into the words layout gave wrong results. On the H100 (call 7): both layouts read plain are right; the
unswizzled tile read through its permuted view is wrong (1020 of 1024 words), read in the transposed layout and
permuted in registers right; the 128B-swizzled tile is right both ways (but its kernel serialised its wgmmas, C7515).

    python3 .ci/gpu/gluon_tma_words_probe.py        # GPU"""

import os
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from kernels.w4a16_gluon import _tma_load, _transposed, words_layout  # noqa: E402


@gluon.jit
def _probe(w_desc, out_ptr, N, PERMUTED: gl.constexpr, TRANSPOSED_READ: gl.constexpr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    wl: gl.constexpr = words_layout(gl.to_linear_layout(a_l, [64, 128]))
    ws = gl.allocate_shared_memory(gl.int32, [16, 64], w_desc.layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    mbarrier.expect(bar, w_desc.block_type.nbytes)
    _tma_load(w_desc, [16, 64], bar, ws)
    mbarrier.wait(bar, 0)
    if PERMUTED:  # [64, 16] in the words layout; out[n, i] = tile[i, n]
        if TRANSPOSED_READ:
            t = gl.convert_layout(gl.permute(ws.load(_transposed(wl)), (1, 0)), wl, assert_trivial=True)
        else:
            t = ws.permute((1, 0)).load(wl)
        rn = gl.arange(0, 64, layout=gl.SliceLayout(1, wl))
        ri = gl.arange(0, 16, layout=gl.SliceLayout(0, wl))
        gl.store(out_ptr + rn[:, None] * 16 + ri[None, :], t)
    else:
        bl: gl.constexpr = gl.BlockedLayout([1, 4], [4, 8], [4, 1], [1, 0])
        t = ws.load(bl)
        ri = gl.arange(0, 16, layout=gl.SliceLayout(1, bl))
        rn = gl.arange(0, 64, layout=gl.SliceLayout(0, bl))
        gl.store(out_ptr + ri[:, None] * 64 + rn[None, :], t)


def main() -> None:
    q = torch.randint(-2**31, 2**31 - 1, (64, 256), device="cuda", dtype=torch.int32)
    tile = q[16:32, 64:128]
    layouts = {"swizzle 0": gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2),
               "default (128B swizzle)": gl.NVMMASharedLayout.get_default_for([16, 64], gl.int32)}
    for name, layout in layouts.items():
        for permuted, transposed in ((False, False), (True, False), (True, True)):
            try:
                desc = TensorDescriptor.from_tensor(q, [16, 64], layout)
                out = torch.zeros((64, 16) if permuted else (16, 64), device="cuda", dtype=torch.int32)
                _probe[(1,)](desc, out, 256, PERMUTED=permuted, TRANSPOSED_READ=transposed, num_warps=4)
                want = tile.t() if permuted else tile
                ok = torch.equal(out, want)
                bad = (out != want).sum().item()
                print(f"{name}, {'permuted' if permuted else 'plain'}{' (transposed read)' if transposed else ''}: "
                      f"{'RIGHT' if ok else f'WRONG ({bad} of {out.numel()} words)'}", flush=True)
            except Exception as e:
                print(f"{name}, permuted={permuted}, transposed={transposed}: {type(e).__name__}: {str(e)[:200]}")


if __name__ == "__main__":
    main()
