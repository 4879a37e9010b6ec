"""The Gluon W4A16 kernel's decode tiles (16 tokens, `kernels/w4a16_gluon.py`) against the torch reference, graph-timed
beside the path `w4a16_matmul` picks (the tuned table's entry) and cuBLAS fp16 in the same run (L2 flushed before
each replay); the Gluon times include the copy of x into fragment order. Fourteenth session.

    python3 .ci/gpu/gluon_w4_decode_probe.py [M ...]   # $SHAPES="KxN ..." (default: the 11 Llama shapes),
                                                       # $TILES="1:1:80 2:4:80 ..." consumers:split:maxnreg"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

LLAMA = "8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 " \
        "11008x4096 4096x12288"


def main(argv) -> None:
    import torch

    from kernels import w4a16
    from kernels import w4a16_gluon as g
    from kernels.timing import interleaved_time_ms, l2_flush_buffer
    from kernels.w4a16_tune import MAX_REL_ERR, random_layer, rel_err

    m_values = [int(v) for v in argv] or [1, 16]
    shapes = [tuple(int(v) for v in s.split("x")) for s in os.environ.get("SHAPES", LLAMA).split()]
    tiles = [tuple(int(v) for v in t.split(":")) for t in os.environ.get(
        "TILES", "1:1:80 1:2:80 1:4:80 1:8:80 2:1:80 2:2:80 2:4:80 2:8:80 1:1:128 2:1:168").split()]
    flush = l2_flush_buffer(torch.device("cuda"))
    for K, N in shapes:
        qweight, scales = random_layer(K, N, "cuda")
        wf = torch.randn(K, N, device="cuda", dtype=torch.float16)
        for M in m_values:
            x = torch.randn(M, K, device="cuda", dtype=torch.float16)
            ref = w4a16.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4, validate=False)

            def gluon(c, split, regs):
                def run():
                    g.DECODE_MAXNREG[c] = regs  # read at launch (a launch option: its own build)
                    return g.w4a16_matmul_gluon(x, qweight, scales, 128, n_consumers=c, tokens=16, split_k=split)
                return run

            fns = [lambda: w4a16.w4a16_matmul(x, qweight, scales, None, None, 128, 4, validate=False)]
            names = ["tuned"]
            cfg = w4a16.chosen_config(x, qweight, scales, None, None, 128, 4)
            if cfg["path"] == "frag":  # the tuned frag entry with its scales applied after each K-block's product
                for sa in (1,):
                    fns.append(lambda sa=sa: w4a16.w4a16_matmul(x, qweight, scales, None, None, 128, 4,
                                                                validate=False, **(cfg | {"scale_after": sa})))
                    names.append(f"tuned+sa{sa}")
            for extra in os.environ.get("FRAG", "").split():  # bm:bn:warps:stages:stream_k:permute_x:sa
                bm, bn, w, st, sk, px, sa = (int(v) for v in extra.split(":"))
                fns.append(lambda bm=bm, bn=bn, w=w, st=st, sk=sk, px=px, sa=sa: w4a16.w4a16_matmul(
                    x, qweight, scales, None, None, 128, 4, validate=False, path="frag", block_m=bm, block_n=bn,
                    block_k=128, num_warps=w, num_stages=st, split_k=1, stream_k=sk, permute_x=bool(px),
                    scale_after=sa))
                names.append(f"frag{extra}")
            for c, split, regs in tiles:
                blocks = (N // (64 * c)) * split
                if N % (64 * c) or (K // 128) % (2 * split) or blocks > 16 * 132 or (split > 1 and blocks < 66):
                    continue
                fns.append(gluon(c, split, regs))
                names.append(f"{c}c/s{split}/r{regs}")
            fns.append(lambda: x @ wf)
            errs = []
            for f, n in zip(fns[:-1], names):
                try:
                    errs.append(max(rel_err(f(), ref) for _ in range(3)))
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"  {n}: {type(e).__name__}: {str(e)[:300]}")
                    errs.append(float("nan"))
            keep = [i for i, e in enumerate(errs) if e == e] + [len(fns) - 1]
            fns, names2 = [fns[i] for i in keep], [names[i] for i in keep[:-1]]
            us = [v[0] * 1e3 for v in interleaved_time_ms(fns, 3, 30, flush)]
            bad = [n for n, i in zip(names2, keep) if not errs[i] < MAX_REL_ERR]
            best = min(range(len(names2)), key=lambda i: us[i])
            wbytes = K * N // 2 + (K // 128) * N * 2
            print(f"K={K} N={N} M={M}: {'PASS' if not bad else 'FAIL ' + ','.join(bad)} worst rel err "
                  f"{max(errs[i] for i in keep[:-1]):.1e}; fp16 {us[-1]:.1f} us; tuned {us[0]:.1f} "
                  f"({wbytes / us[0] / 1e3:.0f} GB/s); best {names2[best]} {us[best]:.1f} "
                  f"({wbytes / us[best] / 1e3:.0f} GB/s, {us[0] / us[best]:.2f}x tuned); "
                  + " ".join(f"{n}={u:.1f}" for n, u in zip(names2, us)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
