"""Decode-sized frag tiles at more programs an SM than the tuner offers (fourteenth session): the 16 x 128 tile
(4 warps, 168 registers on sm_90: three CTAs an SM fit) as a stream-K launch of 3 programs an SM, beside 2 (the
tuner's), and the tuned entry, graph-timed with the L2 flushed in one run with cuBLAS fp16.

    python3 .ci/gpu/frag_occupancy_probe.py [M ...]   # $SHAPES="KxN ..."; $CONFIGS="stages:per_sm ..." """

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


def main(argv) -> None:
    import torch

    from kernels import w4a16
    from kernels.timing import interleaved_time_ms, l2_flush_buffer
    from kernels.w4a16_tune import MAX_REL_ERR, random_layer, rel_err

    m_values = [int(v) for v in argv] or [1, 16]
    shapes = [tuple(int(v) for v in s.split("x")) for s in os.environ.get(
        "SHAPES", "8192x57344 28672x8192 4096x28672 8192x10240 14336x4096 4096x12288").split()]
    configs = [tuple(int(v) for v in c.split(":")) for c in os.environ.get(
        "CONFIGS", "4:2 4:3 3:3 5:3 4:4").split()]
    flush = l2_flush_buffer(torch.device("cuda"))
    for K, N in shapes:
        qweight, scales = random_layer(K, N, "cuda")
        wf = torch.randn(K, N, device="cuda", dtype=torch.float16)
        for M in m_values:
            x = torch.randn(M, K, device="cuda", dtype=torch.float16)
            ref = w4a16.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4, validate=False)
            fns = [lambda: w4a16.w4a16_matmul(x, qweight, scales, None, None, 128, 4, validate=False)]
            names = ["tuned"]
            for stages, per_sm in configs:
                fns.append(lambda st=stages, sk=per_sm: w4a16.w4a16_matmul(
                    x, qweight, scales, None, None, 128, 4, validate=False, path="frag", block_m=16, block_n=128,
                    block_k=128, split_k=1, num_warps=4, num_stages=st, stream_k=sk, permute_x=True))
                names.append(f"16x128/s{stages}/sk{per_sm}")
            fns.append(lambda: x @ wf)
            errs = [max(rel_err(f(), ref) for _ in range(2)) for f in fns[:-1]]
            us = [v[0] * 1e3 for v in interleaved_time_ms(fns, 3, 30, flush)]
            bad = [n for n, e in zip(names, errs) if not e < MAX_REL_ERR]
            wbytes = K * N // 2 + (K // 128) * N * 2
            best = min(range(len(names)), key=lambda i: us[i])
            print(f"K={K} N={N} M={M}: {'PASS' if not bad else 'FAIL ' + ','.join(bad)}; fp16 {us[-1]:.1f} us; "
                  f"tuned {us[0]:.1f} ({wbytes / us[0] / 1e3:.0f} GB/s); best {names[best]} {us[best]:.1f} "
                  f"({us[0] / us[best]:.2f}x tuned); " + " ".join(f"{n}={u:.1f}" for n, u in zip(names, us)),
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
