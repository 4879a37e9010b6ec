"""Target program for Nsight Compute (`.ci/gpu/stage_ncu13.sh`): the Gluon W4A16 kernel with one and two consumer
warpgroups (`kernels/w4a16_gluon.py`, symmetric g128 layer) and cuBLAS fp16 on the same shape, each launched once
between cudaProfilerStart and Stop after two warm-up calls (run under `ncu --profile-from-start off`).

    python3 .ci/gpu/ncu_w4_target.py K N M [1c 2c 2c256 auto fp16]   # $GLUON_MODULE: another version of the module

auto: the path `w4a16_matmul` picks (the tuned table's entry for this GPU), its config printed first (fourteenth
session: the decode kernels, `.ci/gpu/stage_ncu14.sh`)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


def main(argv) -> None:
    import torch

    if os.environ.get("GLUON_MODULE"):
        import importlib.util

        spec = importlib.util.spec_from_file_location("w4a16_gluon_other", os.environ["GLUON_MODULE"])
        g = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(g)
    else:
        from kernels import w4a16_gluon as g
    from kernels import w4a16
    from kernels.w4a16_tune import random_layer

    K, N, M = (int(v) for v in argv[:3])
    names = argv[3:] or ["1c", "2c", "fp16"]
    qweight, scales = random_layer(K, N, "cuda")
    wf = torch.randn(K, N, device="cuda", dtype=torch.float16)
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    fns = {"1c": lambda: g.w4a16_matmul_gluon(x, qweight, scales, 128, n_consumers=1),
           "2c": lambda: g.w4a16_matmul_gluon(x, qweight, scales, 128, n_consumers=2),
           "2c256": lambda: g.w4a16_matmul_gluon(x, qweight, scales, 128, n_consumers=2, tokens=256),
           "auto": lambda: w4a16.w4a16_matmul(x, qweight, scales, None, None, 128, 4),
           "fp16": lambda: x @ wf}
    if "auto" in names:
        print("auto:", w4a16.chosen_config(x, qweight, scales, None, None, 128, 4))
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
