"""The warp-specialised Gluon W4A16 GEMM (`kernels/w4a16_gluon.py`, `w4a16_matmul(..., path="gluon")`), with one
and with two consumer warpgroups, against the torch reference, graph-timed beside cuBLAS fp16 (and optionally
another version of the module) in the same run; its time includes the copy of x into fragment order. Eleventh
session, calls 12 and 13 ran the one-consumer kernel as a standalone probe (git e2ff7f6, 0f6092a: symmetric layers,
groups of 128), before it moved into kernels/.

    python3 .ci/gpu/gluon_w4_ws_probe.py sass [BM [C]]     # CPU: waits, A-register hazards, spills (kernels.sass)
    python3 .ci/gpu/gluon_w4_ws_probe.py run [M ...]       # GPU; $SHAPES="KxN ..." (default: four Llama shapes),
                                                           # $OLD_GLUON=file: another version of the module beside
                                                           # $VARIANTS="name=file ...": several such versions;
                                                           # $TILES="1 2 2:256" (default "1 2"): the consumer
                                                           # counts timed, each with a token tile or the default"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


def main(argv) -> None:
    if argv[0] == "sass":
        from kernels.sass import w4a16_gluon_stats

        print(json.dumps(w4a16_gluon_stats(int(argv[1]) if len(argv) > 1 else 256,
                                           consumers=int(argv[2]) if len(argv) > 2 else 1)))
        return
    import torch

    from kernels import w4a16
    from kernels import w4a16_gluon as gluon_w4
    from kernels.timing import interleaved_time_ms, l2_flush_buffer
    from kernels.w4a16_tune import MAX_REL_ERR, random_layer, rel_err

    import importlib.util

    mods = {"": gluon_w4}  # other versions of kernels/w4a16_gluon.py, timed in the same run
    named = [("old ", os.environ["OLD_GLUON"])] if os.environ.get("OLD_GLUON") else []
    named += [(v.split("=")[0] + " ", v.split("=")[1]) for v in os.environ.get("VARIANTS", "").split()]
    for name, path in named:
        spec = importlib.util.spec_from_file_location("w4a16_gluon_" + name.strip(), path)
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    tiles = [(int(t.split(":")[0]), int(t.split(":")[1]) if ":" in t else None)
             for t in os.environ.get("TILES", os.environ.get("CONSUMERS", "1 2")).split()]
    m_values = [int(v) for v in argv[1:]] or [128, 256, 512, 1024]
    shapes = [tuple(int(v) for v in s.split("x")) for s in os.environ.get("SHAPES", "").split()] or [
        (8192, 57344), (8192, 8192), (4096, 4096), (28672, 8192)]
    flush = l2_flush_buffer(torch.device("cuda"))
    for K, N in shapes:
        qweight, scales = random_layer(K, N, "cuda")
        wf = torch.randn(K, N, device="cuda", dtype=torch.float16)
        for M in m_values:
            x = torch.randn(M, K, device="cuda", dtype=torch.float16)
            ref = w4a16.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4, validate=False)

            def gluon(c, bm, mod=gluon_w4):
                return lambda: mod.w4a16_matmul_gluon(x, qweight, scales, 128, n_consumers=c, tokens=bm)

            fns, names = [], []
            for name, mod in mods.items():
                for c, bm in tiles:
                    try:  # a version that does not take the tile says so and is left out
                        gluon(c, bm, mod)()
                    except ValueError as e:
                        print(f"{name}{c}c{bm or ''}: {e}")
                        continue
                    fns.append(gluon(c, bm, mod))
                    names.append(f"{name}{c}c{bm or ''}")
            fns.append(lambda: x @ wf)
            errs = [max(rel_err(f(), ref) for _ in range(3)) for f in fns[:-1]]
            worst = max(errs)
            us = [v[0] * 1e3 for v in interleaved_time_ms(fns, 3, 20, flush)]
            bad = [n for n, e in zip(names, errs) if not e < MAX_REL_ERR]
            print(f"K={K} N={N} M={M}: {'PASS' if not bad else 'FAIL ' + ','.join(bad)} rel err {worst:.1e}; "
                  + ", ".join(f"{n} {u:.1f} us" for n, u in zip(names, us)) + f", cuBLAS fp16 {us[-1]:.1f}; / fp16: "
                  + ", ".join(f"{n} {us[-1] / u:.2f}x" for n, u in zip(names, us)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
