"""Target program for Nsight Compute (`.ci/gpu/stage_ncu14.sh`): the W4A16 path `w4a16_matmul` picks for a
symmetric g128 layer (the tuned table's entry for this GPU) and cuBLAS fp16 on the same shape, each launched once
between cudaProfilerStart and Stop after two warm-up calls (run under `ncu --profile-from-start off`).

    python3 .ci/gpu/ncu_decode_target.py K N M [auto fp16 gluon]"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


def main(argv) -> None:
    import torch

    from kernels import w4a16 as k
    from kernels.w4a16_tune import random_layer

    K, N, M = (int(v) for v in argv[:3])
    names = argv[3:] or ["auto", "fp16"]
    qweight, scales = random_layer(K, N, "cuda")
    wf = torch.randn(K, N, device="cuda", dtype=torch.float16)
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    print("auto:", k.chosen_config(x, qweight, scales, None, None, 128, 4))
    fns = {"auto": lambda: k.w4a16_matmul(x, qweight, scales, None, None, 128, 4),
           "gluon": lambda: k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, path="gluon"),
           "fp16": lambda: x @ wf}
    for n in names:
        fns[n]()
        fns[n]()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for n in names:
        fns[n]()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    print(f"profiled {names} at K={K} N={N} M={M}")


if __name__ == "__main__":
    main(sys.argv[1:])
