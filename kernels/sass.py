"""Compile a Triton kernel for a GPU target without the GPU and count the SASS instructions of its hot loop.

Triton ships ptxas and nvdisasm, so `triton.compile` can build sm_90 code on a CPU-only machine. The
instruction mix of a kernel's main loop per weight (shifts, LOP3s, FMAs, loads, spills) is what decides an
int4 GEMV's speed once the bytes are streaming; counting it here tells whether a code change helps before any
GPU time is spent. The counts depend on the Triton version (CI's, not the GPU machine's).

    python -m kernels.sass gemv [--m 1] [--block-n 256] [--block-k 64] [--warps 1] [--stages 3]
    python -m kernels.sass tiled [--block-m 64] [--block-n 128] [--block-k 64] [--warps 4] [--stages 3]
                                 [--dtype fp16|bf16|fp32] [--bits 4] [--swap-ab] [--row-scales]
    python -m kernels.sass skinny [--block-n 128] [--block-k 128] [--split-k 2] [--dtype fp16|bf16]
    python -m kernels.sass planes [--block-m 64] [--block-n 128] [--block-k 128] [--warps 4] [--dtype fp16|bf16|fp32]
    python -m kernels.sass frag [--block-m 128] [--block-n 128] [--warps 8] [--dtype fp16|bf16] [--zeros none|codes|float]
                             [--even-m] [--permute-x] [--stream-k] [--hazards]
    python -m kernels.sass fp8 [--block-m 64] [--block-n 128] [--warps 4] [--stages 4] [--per-row]

Per weight: the loop's instructions per thread over the weights a thread dequantizes per iteration
(BLOCK_K * BLOCK_N / threads); the tiled kernel dequantizes each weight once per BLOCK_M rows.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import tempfile


def build(fn, signature: dict[str, str], constexprs: dict, divisible_by_16=(), num_warps: int = 4,
          num_stages: int = 3, arch: int = 90, maxnreg: int | None = None):
    """`fn` compiled for sm_`arch` without a GPU: triton.compile's kernel (asm["ttgir"], asm["cubin"], metadata).
    signature: argument -> Triton type ("*fp16", "i32", ...); constexprs: constexpr argument -> value;
    divisible_by_16: arguments the launcher would specialise as multiples of 16 (pointers, leading dimensions),
    which decides vectorised loads. Gluon kernels (triton.experimental.gluon) build the same way."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource as ASTSource

    names = list(fn.arg_names)
    sig = dict(signature) | {k: "constexpr" for k in constexprs}
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in divisible_by_16}
    src = ASTSource(fn=fn, signature=sig, constexprs=dict(constexprs), attrs=attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": True}
    if maxnreg is not None:  # a register cap per thread (warp-specialised kernels share it out by partition)
        options["maxnreg"] = maxnreg
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def disassemble(cubin: bytes) -> str:
    """SASS text of a cubin (the nvdisasm Triton ships)."""
    import triton

    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout


def compile_sass(fn, signature: dict[str, str], constexprs: dict, divisible_by_16=(), num_warps: int = 4,
                 num_stages: int = 3, arch: int = 90) -> str:
    """SASS text of `fn` built for sm_`arch` (`build`)."""
    return disassemble(build(fn, signature, constexprs, divisible_by_16, num_warps, num_stages, arch).asm["cubin"])


_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]+)")  # an instruction's opcode


def opcodes(lines) -> collections.Counter:
    """Opcode counts of SASS lines."""
    return collections.Counter(m.group(1) for m in map(_OPCODE.search, lines) if m)


def loop_mix(sass: str) -> collections.Counter:
    """Opcode counts of the longest backward-branch loop (the K loop of a GEMM)."""
    lines = sass.splitlines()
    labels = {ln.strip().rstrip(":"): i for i, ln in enumerate(lines) if ln.strip().startswith(".L_x")}
    start, end = 0, -1
    for i, ln in enumerate(lines):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", ln)
        if m and labels.get(m.group(1), i) < i and i - labels[m.group(1)] > end - start:
            start, end = labels[m.group(1)], i
    return opcodes(lines[start:end + 1])



# An instruction's opcode, modifiers and operands (after its guard).
_INSTR = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)((?:\.[A-Z0-9_]+)*)\s+([^;]*);")
# A wgmma: HGMMA (16-bit) or QGMMA (FP8) .<m>x<n>x<k>... Racc, A, ... with A a register (register-A) or gdesc[...]
# (A in shared memory).
_HGMMA = re.compile(r"[HQ]GMMA\.\d+x\d+x\d+\S*\s+R\d+,\s+(R(\d+)|gdesc)")
_DEPBAR = re.compile(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s+0x([0-9a-f]+)")
# Opcodes whose register operands are all read (stores, reductions without a result, barriers, branches, fences).
_NO_DEST = ("ST", "RED", "BAR", "BRA", "EXIT", "WARPGROUP", "DEPBAR", "LDGDEPBAR", "LDGSTS", "NOP", "MEMBAR",
            "FENCE", "CCTL", "ERRBAR", "RET", "CALL", "YIELD", "BSSY", "BSYNC", "WARPSYNC", "UTMA", "ARRIVES")


def _written(opcode: str, mods: str, operands: str) -> set[int]:
    """Registers an instruction writes: its first register operand after any predicate destinations (SHFL.IDX PT,
    R5, ...; LOP3.LUT P0, R5, ...), 2 consecutive ones for .64 / .WIDE and 4 for .128 forms (LDSM.x4 / CS2R are
    not widened: the A registers a thread holds are 4-aligned)."""
    if opcode.startswith(_NO_DEST) or opcode in ("HGMMA", "QGMMA", "PLOP3", "R2P") or "SETP" in opcode:
        return set()  # (ISETP / FSETP / PLOP3 / R2P write predicates only)
    for op in (o.strip() for o in operands.split(",")):
        if re.fullmatch(r"!?U?P(T|\d+)", op):
            continue
        if not re.fullmatch(r"R\d+", op):
            return set()
        width = 4 if ".128" in mods else 2 if (".64" in mods or ".WIDE" in mods) else 1
        return set(range(int(op[1:]), int(op[1:]) + width))
    return set()


def wgmma_a_hazards(sass: str, stats: dict | None = None) -> list[str]:
    """Writes to the register A operand of a wgmma still in flight, in every loop of `sass` that issues register-A
    wgmmas: the race of triton 3.6's pipelined RS wgmma (triton-lang/triton#9433, `kernels/w4a16.py`). PTX leaves
    those registers to the program until a wgmma.wait_group retires the wgmma; sm_90 SASS shows the wait as
    WARPGROUP.DEPBAR.LE gsb0, N (at most N groups left in flight), a group ending at the HGMMA marked gsb0. Each
    loop body is walked twice, so groups still in flight at its back edge meet the next iteration's writes.
    Limits: code outside loops (prologue, epilogue) is not walked; a body is read as straight-line code (a wait
    under a forward branch counts as taken). Returns one line per hazard (empty: none); `stats` gets the loops and
    register-A wgmmas examined, so an empty answer can be told from nothing found to check."""
    lines = sass.splitlines()
    labels = {ln.strip().rstrip(":"): i for i, ln in enumerate(lines) if ln.strip().startswith(".L_x")}
    out, loops, wgmmas = [], 0, 0
    for i, ln in enumerate(lines):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", ln)
        if not m or labels.get(m.group(1), i) >= i:
            continue
        body = lines[labels[m.group(1)]:i + 1]
        if not any((h := _HGMMA.search(b)) and h.group(2) for b in body):
            continue
        loops += 1
        groups: list[set[int]] = []  # committed groups in flight: their A registers
        current: set[int] = set()
        for walk in (0, 1):
            for b in body:
                h = _HGMMA.search(b)
                if h:
                    if h.group(2):  # the A fragment of an m64nNk16 16-bit or m64nNk32 FP8 wgmma: 4 registers a thread
                        a = int(h.group(2))
                        current |= set(range(a, a + 4))
                        wgmmas += walk == 0
                    if "gsb0" in b:
                        groups.append(current)
                        current = set()
                    continue
                d = _DEPBAR.search(b)
                if d:
                    keep = int(d.group(1), 16)
                    groups = groups[len(groups) - keep:] if keep else []
                    continue
                ins = _INSTR.search(b)
                if not ins:
                    continue
                hit = _written(*ins.groups()) & set().union(*groups, current)
                if hit and walk == 1:
                    out.append(f"{b.strip()}  writes R{min(hit)}, an A register of a wgmma in flight")
    if stats is not None:
        stats.update(loops=loops, register_a_wgmmas=wgmmas)
    return list(dict.fromkeys(out))

GEMV_SIGNATURE = {"x_ptr": "*fp16", "qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "b_ptr": "*fp16",
                  "y_ptr": "*fp16", "ws_ptr": "*fp32", "cnt_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
                  "group_size": "i32", "k_split": "i32", "split_k": "i32", "stride_xm": "i32", "stride_ym": "i32"}
GEMV_DIVISIBLE = ("x_ptr", "qw_ptr", "s_ptr", "z_ptr", "b_ptr", "y_ptr", "ws_ptr", "cnt_ptr", "N", "K",
                  "group_size", "k_split", "stride_xm", "stride_ym")


ZEROS = {"float": (0, "*fp16"), "codes": (1, "*u8"), "none": (2, "*fp16")}  # --zeros: ZMODE, z_ptr's type


def gemv_mix(m: int = 1, block_n: int = 256, block_k: int = 64, num_warps: int = 1, num_stages: int = 3,
             reduce_rows: bool = True, pdl: bool = False, zeros: str = "none", spread_x: bool = False
             ) -> tuple[collections.Counter, float, collections.Counter]:
    """Loop opcode counts of the W4A16 gemv kernel (fp16, even shapes), instructions per weight and thread, and
    the whole kernel's opcode counts (pdl: grid dependency control, and the L2 prefetches, CCTL.E.PF2, that
    $QUANTBENCH_GEMV_PDL_PREFETCH asks for). zeros: the layer's zero points (`ZEROS`; none = symmetric)."""
    from kernels import w4a16

    zmode, ztype = ZEROS[zeros]
    ce = dict(ZMODE=zmode, HAS_BIAS=False, EVEN=True, REDUCE_ROWS=reduce_rows, SPREAD_X=spread_x and m == 1,
              EMULATE_BF16=False, PDL=pdl,
              PREFETCH_BLOCKS=w4a16.GEMV_PDL_PREFETCH_BLOCKS, TRIGGER_LATE=w4a16.GEMV_PDL_TRIGGER_LATE, GLU=False,
              BLOCK_M=m, BLOCK_N=block_n, BLOCK_K=block_k)
    sass = compile_sass(w4a16._w4a16_gemv_kernel, GEMV_SIGNATURE | {"z_ptr": ztype}, ce, GEMV_DIVISIBLE, num_warps,
                        num_stages)
    ops = loop_mix(sass)
    weights_per_thread = block_k * block_n / (32 * num_warps)
    every = opcodes(sass.splitlines())
    every["CCTL.E.PF2"] = sass.count("CCTL.E.PF2")
    return ops, sum(ops.values()) / weights_per_thread, every


TILED_SIGNATURE = {"x_ptr": "*fp16", "qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "g_ptr": "*i32",
                   "b_ptr": "*fp16", "y_ptr": "*fp16", "M": "i32", "N": "i32", "K": "i32", "group_size": "i32",
                   "stride_xm": "i32", "stride_ym": "i32"}
TILED_DIVISIBLE = ("x_ptr", "qw_ptr", "s_ptr", "z_ptr", "g_ptr", "b_ptr", "y_ptr", "N", "K", "group_size",
                   "stride_xm", "stride_ym")
SKINNY_SIGNATURE = {"x_ptr": "*fp16", "qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "g_ptr": "*i32",
                    "b_ptr": "*fp16", "y_ptr": "*fp16", "ws_ptr": "*fp32", "cnt_ptr": "*i32", "M": "i32", "N": "i32",
                    "K": "i32", "group_size": "i32", "split_k": "i32", "stride_xm": "i32", "stride_ym": "i32"}
SKINNY_DIVISIBLE = ("x_ptr", "qw_ptr", "s_ptr", "z_ptr", "g_ptr", "b_ptr", "y_ptr", "ws_ptr", "cnt_ptr", "N", "K",
                    "group_size", "stride_xm", "stride_ym")


def _typed(signature: dict, dtype: str) -> dict:
    """The signature with the activation/scale/output pointers in `dtype` (fp16, bf16 or fp32)."""
    return {a: (f"*{dtype}" if t == "*fp16" else t) for a, t in signature.items()}


def _ce(fn, constexprs: dict) -> dict:
    """Drop constexprs the kernel does not take (so the counts work on kernels before and after an option)."""
    return {k: v for k, v in constexprs.items() if k in fn.arg_names}


def tiled_mix(block_m: int = 64, block_n: int = 128, block_k: int = 64, num_warps: int = 4, num_stages: int = 3,
              bits: int = 4, dtype: str = "fp16", scale_row: bool = True, swap_ab: bool = False,
              split_k: int = 1) -> tuple[collections.Counter, float]:
    """Loop opcode counts of the tiled W4A16 kernel (`_w4a16_kernel`, group 128, no g_idx) and instructions
    per weight and thread (each weight is dequantized once per BLOCK_M rows)."""
    from kernels import w4a16

    fn = w4a16._w4a16_kernel
    ce = _ce(fn, dict(BITS=bits, HAS_GIDX=False, ZMODE=0, SCALE_ROW=scale_row, HAS_BIAS=False, SPLIT_K=split_k,
                      EMULATE_BF16=False, DEQ16=dtype != "fp32", SWAP_AB=swap_ab, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k))
    sass = compile_sass(fn, _typed(TILED_SIGNATURE, dtype), ce, TILED_DIVISIBLE, num_warps, num_stages)
    ops = loop_mix(sass)
    return ops, sum(ops.values()) / (block_k * block_n / (32 * num_warps))


def skinny_mix(block_n: int = 128, block_k: int = 128, num_warps: int = 4, num_stages: int = 3, bits: int = 4,
               dtype: str = "fp16", scale_row: bool = True, use_dot: bool = True,
               split_k: int = 2) -> tuple[collections.Counter, float]:
    """Loop opcode counts of the skinny W4A16 kernel (`_w4a16_skinny_kernel`; tl.dot pads M to 16) and
    instructions per weight and thread."""
    from kernels import w4a16

    fn = w4a16._w4a16_skinny_kernel
    ce = _ce(fn, dict(BITS=bits, HAS_GIDX=False, ZMODE=0, SCALE_ROW=scale_row, HAS_BIAS=False,
                      USE_DOT=use_dot, EMULATE_BF16=False, DEQ16=dtype != "fp32", BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k))
    sass = compile_sass(fn, _typed(SKINNY_SIGNATURE, dtype), ce, SKINNY_DIVISIBLE, num_warps, num_stages)
    ops = loop_mix(sass)
    return ops, sum(ops.values()) / (block_k * block_n / (32 * num_warps))


PLANES_SIGNATURE = {"x_ptr": "*fp16", "qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "b_ptr": "*fp16",
                    "y_ptr": "*fp16", "M": "i32", "N": "i32", "K": "i32", "group_size": "i32", "stride_xm": "i32",
                    "stride_ym": "i32"}
PLANES_DIVISIBLE = ("x_ptr", "qw_ptr", "s_ptr", "z_ptr", "b_ptr", "y_ptr", "N", "K", "group_size", "stride_xm",
                    "stride_ym")


def planes_mix(block_m: int = 64, block_n: int = 128, block_k: int = 128, num_warps: int = 4, num_stages: int = 3,
               dtype: str = "fp16", split_k: int = 1) -> tuple[collections.Counter, float]:
    """Loop opcode counts of the code-plane W4A16 kernel (`_w4a16_planes_kernel`) and instructions per weight and
    thread (each weight is dequantized once per BLOCK_M rows); dtype fp32 means 16-bit x with fp32 s/zs."""
    from kernels import w4a16

    sig = _typed(PLANES_SIGNATURE, "fp16" if dtype == "fp32" else dtype)
    if dtype == "fp32":
        sig |= {"s_ptr": "*fp32", "z_ptr": "*fp32"}
    ce = dict(ZMODE=0, HAS_BIAS=False, SPLIT_K=split_k, EMULATE_BF16=False, DEQ16=dtype != "fp32", BLOCK_M=block_m,
              BLOCK_N=block_n, BLOCK_K=block_k)
    sass = compile_sass(w4a16._w4a16_planes_kernel, sig, ce, PLANES_DIVISIBLE, num_warps, num_stages)
    ops = loop_mix(sass)
    return ops, sum(ops.values()) / (block_k * block_n / (32 * num_warps))


FRAG_SIGNATURE = {"x_ptr": "*fp16", "qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "b_ptr": "*fp16",
                  "y_ptr": "*fp16", "ws_ptr": "*fp32", "cnt_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
                  "group_size": "i32", "k_split": "i32", "split_k": "i32", "n_tiles": "i32", "tiles": "i32",
                  "stride_xm": "i32", "stride_ym": "i32"}
FRAG_DIVISIBLE = ("x_ptr", "qw_ptr", "s_ptr", "z_ptr", "b_ptr", "y_ptr", "ws_ptr", "cnt_ptr", "N", "K", "group_size",
                  "k_split", "stride_xm", "stride_ym")


def frag_sass(block_m: int = 128, block_n: int = 128, num_warps: int = 8, num_stages: int = 3, dtype: str = "fp16",
              zeros: str = "none", even_m: bool = False, permute_x: bool = False, stream_k: bool = False) -> str:
    """sm_90 SASS of the fragment-order W4A16 kernel (`_w4a16_frag_kernel`) for one tile and variant."""
    from kernels import w4a16

    zmode, zty = ZEROS[zeros]
    sig = _typed(FRAG_SIGNATURE, dtype) | {"z_ptr": zty if zeros == "codes" else f"*{dtype}"}
    ce = dict(ZMODE=zmode, HAS_BIAS=False, EVEN_N=True, EVEN_M=even_m, ASM=True, EMULATE_BF16=False,
              PERMUTE_X=permute_x, STREAM_K=stream_k,
              Z_WORDS=zeros == "codes" and w4a16.frag_zero_words_tile(block_m, block_n, num_warps),
              BLOCK_M=block_m, BLOCK_N=block_n)
    return compile_sass(w4a16._w4a16_frag_kernel, sig, ce, FRAG_DIVISIBLE, num_warps, num_stages)


def frag_mix(block_m: int = 128, block_n: int = 128, num_warps: int = 8, num_stages: int = 3, dtype: str = "fp16",
             zeros: str = "none", even_m: bool = False, permute_x: bool = False, stream_k: bool = False
             ) -> tuple[collections.Counter, float, collections.Counter]:
    """(K-loop opcode counts, instructions per weight and thread, whole-kernel counts) of the fragment-order W4A16
    kernel (`_w4a16_frag_kernel`; each weight dequantized once per BLOCK_M rows, 128-row K-blocks)."""
    sass = frag_sass(block_m, block_n, num_warps, num_stages, dtype, zeros, even_m, permute_x, stream_k)
    ops = loop_mix(sass)
    return ops, sum(ops.values()) / (128 * block_n / (32 * num_warps)), opcodes(sass.splitlines())


FP8_GEMM_SIGNATURE = {"x_ptr": "*fp8e4nv", "w_ptr": "*fp8e4nv", "y_ptr": "*bf16", "xs_ptr": "*fp32", "ws_ptr": "*fp32",
                      "b_ptr": "*bf16", "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32", "stride_wn": "i32",
                      "stride_ym": "i32", "stride_xsm": "i32", "stride_xsk": "i32", "stride_wsn": "i32",
                      "stride_wsk": "i32"}
FP8_GEMM_DIVISIBLE = ("x_ptr", "w_ptr", "y_ptr", "xs_ptr", "ws_ptr", "b_ptr", "N", "K", "stride_xm", "stride_wn",
                      "stride_ym", "stride_xsm")


def fp8_gemm_mix(block_m: int = 64, block_n: int = 128, num_warps: int = 4, num_stages: int = 4,
                 block_scaled: bool = True, block_k: int = 128) -> tuple[collections.Counter, collections.Counter]:
    """(K-loop opcode counts, whole-kernel opcode counts) of the FP8 GEMM (bf16 out, even K, 128x128 scale blocks
    when block_scaled). Hopper's FP8 wgmma disassembles as QGMMA; STL/LDL are register spills."""
    from kernels import fp8

    ce = dict(HAS_BIAS=False, BLOCK_SCALED=block_scaled, EVEN_K=True, BLOCK_M=block_m, BLOCK_N=block_n,
              BLOCK_K=block_k, SCALE_BN=128 if block_scaled else 1, GROUP_M=8, INTERP_K_STEPS=0)
    sass = compile_sass(fp8._fp8_gemm_kernel, FP8_GEMM_SIGNATURE, ce, FP8_GEMM_DIVISIBLE, num_warps, num_stages)
    return loop_mix(sass), opcodes(sass.splitlines())


def _wgmma_stats(kernel) -> dict:
    """What the Gluon kernels' CPU checks read from a built kernel: its wgmma waits (the depths, and how many wait
    at depth 1), writes to the A registers of wgmmas in flight (`wgmma_a_hazards`), the wgmma counts (HGMMA 16-bit,
    QGMMA FP8), spills and shared memory."""
    sass = disassemble(kernel.asm["cubin"])
    stats: dict = {}
    hazards = wgmma_a_hazards(sass, stats)
    every = opcodes(sass.splitlines())
    waits = ["0x" + d for d in _DEPBAR.findall(sass)]
    return {"waits": sorted(set(waits)), "depth1_waits": waits.count("0x1"), "hazards": hazards,
            "register_a_wgmmas": stats["register_a_wgmmas"], "hgmma": every["HGMMA"], "qgmma": every["QGMMA"],
            "spills": every["STL"] + every["LDL"], "shared": kernel.metadata.shared}


def fp8_gluon_stats() -> dict:
    """The Gluon block-FP8 GEMM (`kernels.fp8_gluon`) built for sm_90: `_wgmma_stats` and the register
    reallocations (setmaxnreg) of its partitions."""
    from kernels import fp8_gluon as g

    desc = lambda rows: f"tensordesc<fp8e4nv[{rows}, 128],{g._smem_layout(rows)!r}>"  # noqa: E731
    sig = {"x_desc": desc(64), "w_desc": desc(256), "xs_ptr": "*fp32", "ws_ptr": "*fp32", "y_ptr": "*bf16",
           "b_ptr": "*bf16", "M": "i32", "N": "i32", "K": "i32", "stride_xsm": "i32", "stride_wsn": "i32",
           "stride_ym": "i32", "has_bias": "i32"}
    kernel = build(g.fp8_block_gemm_kernel, sig, {"GROUP_M": g.GROUP_M, "num_warps": 4},
                   ("xs_ptr", "ws_ptr", "y_ptr", "b_ptr", "N", "K", "stride_ym"), 4, maxnreg=g.MAXNREG)
    return _wgmma_stats(kernel) | {"setmaxnreg": _setmaxnreg(kernel)}


def _setmaxnreg(kernel) -> list[str]:
    """The register counts a kernel's partitions reallocate to (setmaxnreg in its PTX)."""
    return sorted(set(re.findall(r"setmaxnreg\.(?:inc|dec)\.sync\.aligned\.u32\s+(\d+)", kernel.asm["ptx"])))


def w4a16_gluon_stats(bm: int = 256, ones: bool = False, consumers: int = 1, zeros: bool = False) -> dict:
    """The Gluon W4A16 GEMM (`kernels.w4a16_gluon`) built for sm_90 with BM-token tiles and 1 or 2 consumer
    warpgroups (2 with BM = 256: the kernel with one partition of two warpgroups in step), as
    `w4a16_matmul_gluon` launches it: `_wgmma_stats` and the register reallocations (setmaxnreg) left in its PTX.
    ones: the launcher's specialisation of integer arguments equal to 1 (groups of 128 with a bias, one
    token), the binary a group-128 layer runs; zeros: a layer with uint8 zero codes."""
    from kernels import w4a16_gluon as g

    if bm not in (64, 128, 256):
        raise ValueError(f"w4a16-gluon: token tiles of 64, 128 or 256, not {bm}")
    plan = g.launch_plan(consumers, bm)
    sig = {"x_desc": f"tensordesc<fp16[{bm}, 128],{g._smem_layout(bm)!r}>",
           "w_desc": f"tensordesc<i32[16, {plan.words}],{g._words_layout()!r}>", "s_ptr": "*fp16",
           "z_ptr": "*u8" if zeros else "*fp16", "y_ptr": "*fp16", "b_ptr": "*fp16", "M": "i32", "N": "i32",
           "K": "i32", "stride_ym": "i32", "gpb": "i32", "has_bias": "i32"}
    consts = {"num_warps": plan.num_warps, "HAS_Z": zeros} | ({"gpb": 1, "has_bias": 1, "M": 1} if ones else {})
    for name in consts.keys() - {"num_warps", "HAS_Z"}:
        del sig[name]
    with g.launch_registers_kept():
        kernel = build(g.w4a16_ws2_kernel if plan.two_partitions else g.w4a16_ws_kernel, sig, consts,
                       ("s_ptr", "z_ptr", "y_ptr", "b_ptr", "N", "K", "stride_ym"), plan.num_warps,
                       maxnreg=plan.maxnreg)
    return _wgmma_stats(kernel) | {"setmaxnreg": _setmaxnreg(kernel)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kernels.sass", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel", choices=["gemv", "tiled", "skinny", "planes", "frag", "fp8", "fp8-gluon",
                                       "w4a16-gluon"])
    ap.add_argument("--m", type=int, default=1, help="gemv: rows (1, 2 or 4)")
    ap.add_argument("--block-m", type=int, default=None, help="tiled, planes, fp8, frag (64); w4a16-gluon (256)")
    ap.add_argument("--per-row", action="store_true", help="fp8: the per-tensor/per-row GEMM, not block-scaled")
    ap.add_argument("--block-n", type=int, default=None, help="default: 256 gemv, 128 tiled/skinny")
    ap.add_argument("--block-k", type=int, default=None, help="default: 64 gemv/tiled, 128 skinny")
    ap.add_argument("--warps", type=int, default=None, help="default: 1 gemv, 4 tiled/skinny")
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--bits", type=int, default=4, help="tiled/skinny")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"], help="tiled/skinny activations")
    ap.add_argument("--row-scales", action="store_true", help="tiled/skinny: per-row scales (no SCALE_ROW)")
    ap.add_argument("--swap-ab", action="store_true", help="tiled: the swapped (W^T @ x^T) variant")
    ap.add_argument("--split-k", type=int, default=None, help="default: 1 tiled, 2 skinny")
    ap.add_argument("--pdl", action="store_true", help="gemv: built for programmatic dependent launch")
    ap.add_argument("--spread-x", action="store_true", help="gemv, M = 1: activations spread over the lanes")
    ap.add_argument("--zeros", default="none", choices=sorted(ZEROS),
                    help="gemv, frag: the layer's zero points (none: symmetric; codes: uint8; float: pre-multiplied fp16)")
    ap.add_argument("--even-m", action="store_true", help="frag: M a multiple of BLOCK_M (x loads unmasked)")
    ap.add_argument("--permute-x", action="store_true", help="frag: x read in natural order, permuted in the kernel")
    ap.add_argument("--stream-k", action="store_true", help="frag: the stream-K launch (runs of K-blocks per program)")
    ap.add_argument("--consumers", type=int, default=1, choices=[1, 2], help="w4a16-gluon: consumer warpgroups")
    ap.add_argument("--zero-codes", action="store_true", help="w4a16-gluon: a layer with uint8 zero codes")
    ap.add_argument("--ones", action="store_true",
                    help="w4a16-gluon: the integer arguments of 1 specialised (groups of 128, a bias, M = 1)")
    ap.add_argument("--json", action="store_true", help="print {per_weight, ops} as JSON (gemv: and kernel_ops)")
    ap.add_argument("--hazards", action="store_true",
                    help="frag: list writes to the A registers of wgmmas in flight (`wgmma_a_hazards`); exit 1 if any")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("kernels.sass compiles for the GPU: unset TRITON_INTERPRET (interpreted kernels don't build)")
    if args.kernel == "fp8-gluon":
        print(json.dumps(fp8_gluon_stats()))
        return
    block_m = args.block_m or (256 if args.kernel == "w4a16-gluon" else 64)
    if args.kernel == "w4a16-gluon":  # --block-m: the token tile (64, 128 or 256)
        print(json.dumps(w4a16_gluon_stats(block_m, args.ones, args.consumers, args.zero_codes)))
        return
    if args.kernel == "fp8":
        loop, every = fp8_gemm_mix(block_m, args.block_n or 128, args.warps or 4, args.stages,
                                   not args.per_row)
        out = {"loop": dict(loop), "spills": every["STL"] + every["LDL"], "qgmma": every["QGMMA"]}
        print(json.dumps(out) if args.json else f"loop {sum(loop.values())} instructions, QGMMA {loop['QGMMA']}, "
              f"FFMA {loop['FFMA']}, FMUL {loop['FMUL']}, BAR {loop['BAR']}, spills {out['spills']}")
        return
    warps = args.warps or (1 if args.kernel == "gemv" else 4)
    every = None
    if args.kernel == "gemv":
        ops, per_weight, every = gemv_mix(args.m, args.block_n or 256, args.block_k or 64, warps, args.stages,
                                          pdl=args.pdl, zeros=args.zeros, spread_x=args.spread_x)
    elif args.kernel == "frag" and args.hazards:
        stats = {}
        found = wgmma_a_hazards(frag_sass(block_m, args.block_n or 128, args.warps or 8, args.stages, args.dtype,
                                          args.zeros, args.even_m, args.permute_x, args.stream_k), stats)
        print(f"{len(found)} writes to A registers of wgmmas in flight ({stats['loops']} loops, "
              f"{stats['register_a_wgmmas']} register-A wgmmas examined)" + "".join(f"\n  {h}" for h in found[:20]))
        raise SystemExit(1 if found or not stats["register_a_wgmmas"] else 0)
    elif args.kernel == "frag":
        ops, per_weight, every = frag_mix(block_m, args.block_n or 128, args.warps or 8, args.stages,
                                          args.dtype, args.zeros, args.even_m, args.permute_x, args.stream_k)
    elif args.kernel == "planes":
        ops, per_weight = planes_mix(block_m, args.block_n or 128, args.block_k or 128, warps, args.stages,
                                     args.dtype, args.split_k or 1)
    elif args.kernel == "tiled":
        ops, per_weight = tiled_mix(block_m, args.block_n or 128, args.block_k or 64, warps, args.stages,
                                    args.bits, args.dtype, not args.row_scales, args.swap_ab, args.split_k or 1)
    else:
        ops, per_weight = skinny_mix(args.block_n or 128, args.block_k or 128, warps, args.stages, args.bits,
                                     args.dtype, not args.row_scales, True, args.split_k or 2)
    if args.json:
        print(json.dumps({"per_weight": per_weight, "ops": dict(ops)} | ({"kernel_ops": dict(every)} if every else {})))
        return
    print(f"{per_weight:.2f} instructions per weight in the loop; spills (STL/LDL): "
          f"{ops['STL'] + ops['LDL']}; {dict(ops.most_common(16))}")


if __name__ == "__main__":
    main()
