"""GEMM backends side by side on real linear-layer shapes, against the GPU's measured roofline.

Each backend builds its weights once per (K, N) and exposes `run(x)`; every (backend, shape, M) is timed with
CUDA events on CUDA-graph replays after warm-up (median of many runs, L2 flushed before each run), and
reported with achieved GB/s and TFLOP/s and the fraction of the roofline measured in the same run (a large
device copy for bandwidth, a large bf16 and fp8 matmul for the matrix rate). Rows also carry the SM clock and
board power sampled while they were timed (`gpu_state`) and, for our W4A16, the path and tiles that ran (`kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from harness.metrics.gpu_state import GpuSampler
from kernels.timing import cuda_time_ms, graph_time_ms, interleaved_time_ms, l2_flush_buffer

# (K, N) = (in_features, out_features) of the fused linear layers; qkv and gate_up fused as serving engines do.
MODEL_SHAPES: dict[str, dict[str, tuple[int, int]]] = {
    "llama-2-7b": {"qkv": (4096, 12288), "o": (4096, 4096), "gate_up": (4096, 22016), "down": (11008, 4096)},
    "llama-3-8b": {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)},
    "llama-3-70b": {"qkv": (8192, 10240), "o": (8192, 8192), "gate_up": (8192, 57344), "down": (28672, 8192)},
}
M_VALUES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)


@dataclass
class Backend:
    """A GEMM implementation: `build(K, N, device)` returns (run(x) -> y, weight bytes, activation dtype)."""

    name: str
    build: Callable[[int, int, torch.device], tuple[Callable[[torch.Tensor], torch.Tensor], int, torch.dtype]]
    available: Callable[[torch.device], str | None] = lambda d: None  # None = available, else why not
    matrix_rate: str = "bf16"  # which measured matrix rate bounds it: "bf16" or "fp8" (FP8 tensor cores)


def matrix_rate_of(backend_name: str) -> str:
    """The matrix rate a backend's arithmetic runs at, for rows recorded before rows carried `matrix_rate`."""
    return "fp8" if "fp8" in backend_name or backend_name.startswith("scaled_mm") else "bf16"


def roofline_fraction(bytes_moved: float, flops: float, median_ms: float, roofline: dict, rate: str) -> float:
    """Floor time (bytes at the measured HBM bandwidth, or flops at the measured bf16/fp8 matrix rate, whichever
    is larger) over the measured time."""
    tflops = roofline.get(f"{rate}_tflops") or roofline["bf16_tflops"]
    floor_ms = max(bytes_moved / (roofline["hbm_gbps"] * 1e9), flops / (tflops * 1e12)) * 1e3
    return floor_ms / median_ms


@dataclass
class Roofline:
    hbm_gbps: float
    bf16_tflops: float
    fp8_tflops: float | None
    details: dict = field(default_factory=dict)


def measure_roofline(device: torch.device) -> Roofline:
    """HBM bandwidth from a 4 GiB device copy (bytes read + written), matrix rates from 8192^3 matmuls."""
    src = torch.empty(2**30, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    ms, _, _ = cuda_time_ms(lambda: dst.copy_(src), warmup=3, iters=20)
    hbm = 2 * src.numel() * 4 / (ms / 1e3) / 1e9
    src = dst = None  # free the 8 GiB before the matmuls
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms, _, _ = cuda_time_ms(lambda: a @ b, warmup=5, iters=20)
    bf16 = 2 * n**3 / (ms / 1e3) / 1e12
    fp8 = None
    if torch.cuda.get_device_capability(device) >= (8, 9):
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
        one = torch.ones((), device=device)
        ms, _, _ = cuda_time_ms(lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16), 5, 20)
        fp8 = 2 * n**3 / (ms / 1e3) / 1e12
    return Roofline(hbm_gbps=hbm, bf16_tflops=bf16, fp8_tflops=fp8,
                    details={"copy_bytes": 2 * 2**30 * 4, "matmul_n": n})


def _dense(dtype: torch.dtype) -> Backend:
    def build(K, N, device):
        w = torch.randn(N, K, device=device, dtype=dtype) * 0.02
        return (lambda x: F.linear(x, w)), w.numel() * w.element_size(), dtype

    return Backend(f"cublas_{str(dtype).split('.')[-1]}", build)


def torch_backends() -> list[Backend]:
    """Peers that ship with torch: cuBLAS in bf16/fp16 (F.linear)."""
    return [_dense(torch.bfloat16), _dense(torch.float16)]


# A heavy GEMM lowers the SM clock (power and thermal limits) and a light row timed right after it read up to 30% slow
# (H100, ninth session: Llama-3-70B gate_up at M = 1 took 130.7 us after the previous backend's M = 1024, 100.4 us
# in the tuner). So the backends of one (shape, M) are timed together, their iterations interleaved
# (`kernels.timing.interleaved_time_ms`), after each op has run for SETTLE_MS.
SETTLE_MS = 20.0
SLOW_MS = 10.0  # an op slower than this (e.g. tinygemm at M = 4096: 100+ ms a call) is timed on its own, 5 runs


def _build(backend: Backend, K: int, N: int, device) -> tuple[tuple | None, str | None]:
    """(backend.build(K, N, device), None), or (None, why it cannot run here)."""
    why = backend.available(device)
    if why is not None:
        return None, why
    try:
        return backend.build(K, N, device), None
    except Exception as e:  # a peer that cannot serve this shape: recorded, not fatal
        return None, f"{type(e).__name__}: {e}"


def _row(backend: Backend, K: int, N: int, m: int, w_bytes: int, x: torch.Tensor, roof: Roofline,
         timed: tuple[float, float, float, str], flush: torch.Tensor | None, gpu_state: dict | None = None,
         run=None) -> dict:
    """gpu_state: the SM clock and power sampled while it was timed (`GpuSampler.summary`), when NVML answers.
    run: the timed op; where it has a `kernel(x)` (our W4A16), the row records the path and tiles it ran."""
    med, lo, hi, timer = timed
    act_bytes = m * K * x.element_size() + m * N * 2
    bytes_moved = w_bytes + act_bytes
    flops = 2 * m * N * K
    gbps = bytes_moved / (med / 1e3) / 1e9
    tflops = flops / (med / 1e3) / 1e12
    return {"backend": backend.name, "K": K, "N": N, "M": m, "status": "ok", "median_ms": med,
            "min_ms": lo, "max_ms": hi, "bytes": bytes_moved, "flops": flops, "gbps": gbps,
            "tflops": tflops, "hbm_fraction": gbps / roof.hbm_gbps,
            "roofline_fraction": roofline_fraction(bytes_moved, flops, med, roof.__dict__, backend.matrix_rate),
            "matrix_rate": backend.matrix_rate, "l2_flushed": flush is not None, "timer": timer} | (
                {"gpu_state": gpu_state} if gpu_state else {}) | (
                {"kernel": run.kernel(x)} if hasattr(run, "kernel") else {})


def time_peers(built: list[tuple[Backend, tuple | None, str | None]], K: int, N: int, m: int, device,
               roof: Roofline, warmup: int = 5, iters: int = 30, flush: torch.Tensor | None = None,
               settle_ms: float = SETTLE_MS) -> list[dict]:
    """One row per backend for this (K, N, M): built = [(backend, backend.build(...) or None, why not)]. The ops
    that run are timed together (`interleaved_time_ms`); a row says why a backend could not run or failed."""
    rows: dict[int, dict] = {}
    ready = []  # (index, backend, run, w_bytes, x, ms of one call)
    for i, (b, made, why) in enumerate(built):
        if made is None:
            rows[i] = {"backend": b.name, "K": K, "N": N, "M": m, "status": "unavailable", "reason": why}
            continue
        run, w_bytes, act_dtype = made
        x = torch.randn(m, K, device=device, dtype=act_dtype)
        try:
            once = cuda_time_ms(lambda: run(x), 1, 1)[0]
        except Exception as e:
            rows[i] = {"backend": b.name, "K": K, "N": N, "M": m, "status": "failed",
                       "reason": f"{type(e).__name__}: {e}"}
            continue
        ready.append((i, b, run, w_bytes, x, once))
    fast = []
    for r in ready:
        i, b, run, _, x, once = r
        if once > SLOW_MS:
            continue
        try:
            if settle_ms > 0:
                cuda_time_ms(lambda: run(x), min(2000, int(settle_ms / max(once, 1e-3))), 1)
            fast.append(r)
        except Exception as e:
            rows[i] = {"backend": b.name, "K": K, "N": N, "M": m, "status": "failed",
                       "reason": f"{type(e).__name__}: {e}"}
    if fast:
        with GpuSampler(device) as gpu:  # the clock and power the peers were timed at (shared: interleaved)
            try:
                timed = interleaved_time_ms([(lambda run=run, x=x: run(x)) for _, _, run, _, x, _ in fast], warmup,
                                            iters, flush)
            except Exception:  # one op breaks the rotation: each on its own, so the others still get rows
                timed = []
                for _, b, run, _, x, _ in fast:
                    try:
                        timed.append(graph_time_ms(lambda: run(x), warmup, iters, flush))
                    except Exception as e:
                        timed.append(e)
        for (i, b, run, w_bytes, x, _), t in zip(fast, timed):
            rows[i] = (_row(b, K, N, m, w_bytes, x, roof, t, flush, gpu.summary(), run)
                       if not isinstance(t, Exception)
                       else {"backend": b.name, "K": K, "N": N, "M": m, "status": "failed",
                             "reason": f"{type(t).__name__}: {t}"})
    for i, b, run, w_bytes, x, once in ready:  # the slow ones after the others, so they heat none of them
        if once > SLOW_MS:
            try:
                with GpuSampler(device) as gpu:
                    t = graph_time_ms(lambda: run(x), 1, 5, flush)
                rows[i] = _row(b, K, N, m, w_bytes, x, roof, t, flush, gpu.summary(), run)
            except Exception as e:
                rows[i] = {"backend": b.name, "K": K, "N": N, "M": m, "status": "failed",
                           "reason": f"{type(e).__name__}: {e}"}
    return [rows[i] for i in range(len(built))]


def bench_point(backend: Backend, K: int, N: int, m_values, device, roof: Roofline, warmup: int = 5,
                iters: int = 30, flush: torch.Tensor | None = None) -> list[dict]:
    """Time one backend on one (K, N) for every M; returns one row per M (or one row saying why it can't run).
    `flush` (kernels.timing.l2_flush_buffer) is overwritten before each timed run: weights then come from HBM
    even when they would fit in L2 (Llama-3-8B o_proj in fp16 is 32 MB; an H100's L2 is 50 MB). Each call is
    replayed from a CUDA graph (kernels.timing.graph_time_ms): device time, as in graph-captured decode, not
    the host's launch overhead; a row's `timer` says which was used."""
    made, why = _build(backend, K, N, device)
    if made is None:
        return [{"backend": backend.name, "K": K, "N": N, "M": m, "status": "unavailable", "reason": why}
                for m in m_values]
    return [time_peers([(backend, made, None)], K, N, m, device, roof, warmup, iters, flush)[0] for m in m_values]


def fp8_backends() -> list[Backend]:
    """Our FP8 paths and torch._scaled_mm, bf16 activations in, bf16 out (activation quantization timed too)."""
    from kernels import fp8 as k

    def need_fp8(device):
        return None if k.fp8_supported(device) else "needs an FP8 GPU (compute capability >= 8.9)"

    def need_gluon(device):
        from kernels import fp8_gluon

        probe = torch.empty(0, 128, dtype=k.FP8_DTYPE, device=device)
        return need_fp8(device) or fp8_gluon.unsupported(probe, probe, (128, 128))

    def make(name, quant, need=need_fp8, **opts):
        def build(K, N, device):
            w = torch.randn(N, K, device=device) * 0.02
            wq, ws = quant(w)
            return (lambda x: k.fp8_linear(x, wq, ws, **opts)), wq.numel() + ws.numel() * 4, torch.bfloat16

        return Backend(name, build, need, matrix_rate="fp8")

    return [
        make("scaled_mm_tensor", k.quantize_fp8_per_tensor, backend="scaled_mm"),
        make("scaled_mm_rowwise", k.quantize_fp8_per_channel, backend="scaled_mm", act_granularity="token"),
        # use_fast_accum=True: no fp32 promotion along K, what method=fp8 runs by default (method.fast_accum)
        make("scaled_mm_tensor_fastacc", k.quantize_fp8_per_tensor, backend="scaled_mm", fast_accum=True),
        make("scaled_mm_rowwise_fastacc", k.quantize_fp8_per_channel, backend="scaled_mm", act_granularity="token",
             fast_accum=True),
        # our one-launch FP8 GEMV (activations quantized in the kernel) up to kernels.fp8.GEMV_MAX_M rows,
        # torch._scaled_mm above: what fp8_linear(backend="gemv") runs
        make("triton_fp8_gemv_tensor", k.quantize_fp8_per_tensor, backend="gemv"),
        make("triton_fp8_block128", lambda w: k.quantize_fp8_block(w, (128, 128)), backend="triton",
             block_size=(128, 128)),
        # the Gluon block-scaled GEMM (Hopper; kernels.fp8_gluon), which backend="auto" runs where the tuned table
        # found it faster (untuned: from kernels.fp8.GLUON_MIN_M rows)
        make("gluon_fp8_block128", lambda w: k.quantize_fp8_block(w, (128, 128)), backend="gluon",
             block_size=(128, 128), need=need_gluon),
        # what method=fp8 runs on block-scaled checkpoints: the tuned table's pick of the two (fp8_linear's auto)
        make("auto_fp8_block128", lambda w: k.quantize_fp8_block(w, (128, 128)), block_size=(128, 128)),
    ]


W4A16_ZEROS = {"": "none", "_zp": "codes", "_zs16": "float16"}  # name suffix -> the layer's zero points


def w4a16_backends(group_size: int = 128, zero_forms: tuple[str, ...] = ("", "_zp")) -> list[Backend]:
    """Our Triton W4A16 (GPTQ layout) as layers hold it: symmetric (no zeros read), asymmetric with uint8 zero
    codes (`_zp`, an AWQ or sym=False GPTQ layer), symmetric with act-order g_idx; and torch's int4 tinygemm.
    `_zs16` (fp16 pre-multiplied zeros, what layers held before 2026-11-27) only when asked for."""
    from kernels import w4a16

    def need_cuda(device):
        return None if device.type == "cuda" else "needs a CUDA GPU"

    def ours(act_order: bool, suffix: str = ""):
        def build(K, N, device):
            G = K // group_size
            q = torch.randint(0, 16, (K, N), device=device, dtype=torch.int32)
            qweight = w4a16.pack_int_weights(q, 4)
            scales = (torch.rand(G, N, device=device) * 0.01 + 0.001).half()
            z = torch.randint(0, 16, (G, N), device=device)
            zeros = {"none": None, "codes": z.to(torch.uint8),
                     "float16": w4a16.premultiply_zeros(z, scales)}[W4A16_ZEROS[suffix]]
            g_idx = None
            if act_order:
                g_idx = (torch.randperm(K, device=device) // group_size).to(torch.int32)
            w_bytes = qweight.numel() * 4 + scales.numel() * 2 + (K * 4 if act_order else 0)
            w_bytes += 0 if zeros is None else zeros.numel() * zeros.element_size()
            def run(x):
                return w4a16.w4a16_matmul(x, qweight, scales, zeros, g_idx, group_size, 4, validate=False)

            run.kernel = lambda x: w4a16.chosen_config(x, qweight, scales, zeros, g_idx, group_size, 4)
            return run, w_bytes, torch.float16

        return Backend(f"triton_w4a16_g{group_size}" + ("_actorder" if act_order else suffix), build, need_cuda)

    def tinygemm(K, N, device):
        w = torch.randint(0, 16, (N, K), device=device, dtype=torch.int32)
        packed_u8 = (w[:, ::2] << 4 | w[:, 1::2]).to(torch.uint8)
        wp = torch._convert_weight_to_int4pack(packed_u8, 8)
        sz = torch.rand(K // group_size, N, 2, device=device, dtype=torch.bfloat16) * 0.01
        w_bytes = N * K // 2 + sz.numel() * 2
        return (lambda x: torch._weight_int4pack_mm(x, wp, group_size, sz)), w_bytes, torch.bfloat16

    return ([ours(False, suffix) for suffix in zero_forms] + [ours(True)]
            + [Backend(f"torch_tinygemm_int4_g{group_size}", tinygemm, need_cuda)])


def gemlite_backends(group_size: int = 128) -> list[Backend]:
    """gemlite (pure-Triton peer) as its README documents it for 4-bit weights: `A16W4_HQQ_INT().from_weights`
    (codes [N, K] uint8, scales and zeros [N, K / group]) in fp16, with the kernel choice and tiles from the
    per-GPU config cache gemlite ships and loads on import (configs/h100.json on an H100)."""

    def available(device):
        if device.type != "cuda":
            return "needs a CUDA GPU"
        try:
            import gemlite  # noqa: F401
        except Exception as e:  # not installed, or it failed to import on this GPU / Triton
            return f"gemlite unavailable ({type(e).__name__}: {e}); install it: pip install gemlite"
        return None

    def build(K, N, device):
        from gemlite.helper import A16W4_HQQ_INT

        G = K // group_size
        codes = torch.randint(0, 16, (N, K), device=device, dtype=torch.uint8)
        scales = (torch.rand(N, G, device=device) * 0.01 + 0.001).half()
        zeros = torch.full((N, G), 8.0, device=device).half()
        layer = A16W4_HQQ_INT(device=str(device), dtype=torch.float16).from_weights(codes, scales, zeros)
        return layer, N * K // 2 + 2 * scales.numel() * 2, torch.float16

    return [Backend(f"gemlite_a16w4_g{group_size}", build, available)]


def run_benchmark(models, m_values, backend_names=None, device=None, log=print, on_progress=None,
                  layers=None) -> dict:
    """Every backend (or those named) on every linear shape of `models` (or the `layers` named) for every M:
    {"roofline", "rows"}. Needs a CUDA GPU; unknown model, layer or backend names fail before anything is timed.
    Per layer shape every backend is built first, then each M is timed across the backends together
    (`time_peers`: their timed runs interleaved, so a drifting clock falls on all of them alike).
    `on_progress(metrics so far)` runs after each M of each layer shape (callers write a partial record, so a run
    stopped by a time limit keeps every row it finished: a layer's rows once waited for its last backend, and a
    stop inside the slowest peer lost them all, seventh session call 4)."""
    unknown = [m for m in models if m not in MODEL_SHAPES]
    if unknown:
        raise ValueError(f"kernels: unknown model shapes {unknown}; known: {sorted(MODEL_SHAPES)}")
    known_layers = sorted({name for shapes in MODEL_SHAPES.values() for name in shapes})
    if layers is not None and (not layers or set(layers) - set(known_layers)):
        raise ValueError(f"kernels: layers={list(layers)}; name some of {known_layers}")
    if not m_values or min(m_values) < 1:
        raise ValueError(f"kernels: m_values={list(m_values)} must be positive token counts")
    backends = torch_backends() + fp8_backends() + w4a16_backends() + gemlite_backends()
    if backend_names:
        missing = sorted(set(backend_names) - {b.name for b in backends})
        if missing:
            raise ValueError(f"kernels: unknown backends {missing}; known: {[b.name for b in backends]}")
        backends = [b for b in backends if b.name in backend_names]
    device = torch.device(device or "cuda")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ValueError("bench=kernels times GPU kernels with CUDA events: it needs a CUDA GPU (none is visible)")
    roof = measure_roofline(device)
    log(f"roofline: {roof}")
    flush = l2_flush_buffer(device)
    rows = []
    for model in models:
        for layer, (K, N) in MODEL_SHAPES[model].items():
            if layers is not None and layer not in layers:
                continue
            # every backend's weights at once, then each M across the backends: peers are timed one after another
            # under the same clocks, rather than each backend's light rows after the previous one's heavy ones
            built = [(b, *_build(b, K, N, device)) for b in backends]
            for m in m_values:
                for b, row in zip(backends, time_peers(built, K, N, m, device, roof, flush=flush)):
                    rows.append({"model": model, "layer": layer, **row})
                    if row["status"] == "ok":
                        clock = (row.get("gpu_state") or {}).get("sm_clock_mhz", {}).get("median")
                        log(f"{model:12s} {layer:8s} {b.name:22s} M={row['M']:5d} {row['median_ms']:.4f} ms "
                            f"{row['gbps']:.0f} GB/s {row['tflops']:.1f} TFLOP/s"
                            + (f" {clock:.0f} MHz" if clock else ""))
                    else:
                        log(f"{model} {layer} {b.name} M={row['M']}: {row['status']} {row['reason']}")
                if on_progress is not None:
                    on_progress({"roofline": roof.__dict__, "rows": list(rows),
                                 "backends": [b.name for b in backends]})
            del built
            torch.cuda.empty_cache()
    return {"roofline": roof.__dict__, "rows": rows, "backends": [b.name for b in backends]}


def main(argv=None) -> None:
    """python -m harness.metrics.kernels OUT_DIR [--models ...] [--m ...]: time all backends, write a record
    (`python -m harness bench=kernels` does the same through the runner)."""
    import argparse
    import sys

    from harness import records

    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="directory the record is written to")
    ap.add_argument("--models", nargs="*", default=list(MODEL_SHAPES))
    ap.add_argument("--m", nargs="*", type=int, default=list(M_VALUES))
    ap.add_argument("--backends", nargs="*", default=None)
    ap.add_argument("--layers", nargs="*", default=None, help="qkv, o, gate_up, down (default: all)")
    args = ap.parse_args(argv)
    record = records.new_record({"models": args.models, "m": args.m, "backends": args.backends,
                                 "layers": args.layers}, kind="kernels")
    record["command"] = " ".join(["python -m harness.metrics.kernels", *sys.argv[1:]])

    def write(metrics: dict, status: str):
        record["config"]["backends"] = metrics.pop("backends")
        record.update(status=status, metrics=metrics)
        return records.write_record(record, args.out)

    metrics = run_benchmark(args.models, args.m, args.backends, log=lambda msg: print(msg, flush=True),
                            on_progress=lambda partial: write(partial, "partial"), layers=args.layers)
    print(f"record: {write(metrics, 'ok')}")


if __name__ == "__main__":
    main()
