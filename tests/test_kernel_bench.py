"""`python -m harness bench=kernels`: the kernel benchmark through the runner (timing itself needs a GPU; here the
preset, the record it leaves and its input errors)."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.config import register_configs
from harness.metrics.kernels import MODEL_SHAPES, run_benchmark
from harness.records import read_record

ROOT = Path(__file__).resolve().parent.parent


def _cfg(tmp_path, *overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"results_dir={tmp_path}", "progress=false", "bench=kernels", *overrides])
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_preset_times_every_shape_set_and_nothing_else(tmp_path):
    b = _cfg(tmp_path)["bench"]
    assert b["kernels"]["enabled"] and not b["perplexity"]["enabled"] and not b["throughput"]["enabled"]
    assert not b["lm_eval"]["enabled"]
    assert set(b["kernels"]["models"]) == set(MODEL_SHAPES) and b["kernels"]["m_values"][0] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only path: on a GPU the benchmark would run")
def test_on_cpu_the_run_fails_clearly_and_records_why(tmp_path):
    from harness.runner import run

    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        run(_cfg(tmp_path, "bench.kernels.m_values=[1]"))
    (path,) = tmp_path.glob("*_kernels_*.json")
    rec = read_record(path)
    assert rec["kind"] == "kernels" and rec["status"] == "failed" and "needs a CUDA GPU" in rec["error"]


@pytest.mark.parametrize("args,match", [
    ((["llama-9b"], [1]), r"unknown model shapes \['llama-9b'\]; known: \['llama-2-7b'"),
    ((["llama-3-8b"], [0]), r"m_values=\[0\] must be positive"),
    ((["llama-3-8b"], [1], ["cutlass"]), r"unknown backends \['cutlass'\]"),
])
def test_bad_inputs_fail_before_anything_is_timed(args, match):
    with pytest.raises(ValueError, match=match):
        run_benchmark(*args)


def test_unknown_layer_names_fail_before_anything_is_timed():
    with pytest.raises(ValueError, match=r"layers=\['mlp'\]; name some of \['down', 'gate_up', 'o', 'qkv'\]"):
        run_benchmark(["llama-3-8b"], [1], layers=["mlp"])


def test_a_peer_that_cannot_run_is_recorded_with_why():
    from harness.metrics.kernels import Roofline, bench_point, gemlite_backends

    (peer,) = gemlite_backends()
    rows = bench_point(peer, 256, 512, [1, 16], torch.device("cpu"), Roofline(1.0, 1.0, None))
    assert [r["M"] for r in rows] == [1, 16]
    assert all(r["status"] == "unavailable" and r["reason"] == "needs a CUDA GPU" for r in rows)


def test_each_finished_backend_is_written_before_the_run_ends(tmp_path, monkeypatch):
    # a run stopped by a time limit keeps every backend it finished: main() rewrites its record (status "partial")
    # after each M of each layer shape, and "ok" at the end; the report reads partial kernel records too
    import harness.metrics.kernels as kb
    from harness.plots import kernel_frame
    from harness.records import read_record

    seen = []

    def fake_benchmark(models, m_values, backend_names=None, device=None, log=print, on_progress=None, layers=None):
        roof = {"hbm_gbps": 3000.0, "bf16_tflops": 700.0, "fp8_tflops": None}
        rows = []
        for layer in ("qkv", "o"):
            for backend, ms in (("cublas_bfloat16", 0.02), ("triton_w4a16_g128", 0.01)):
                rows.append({"model": models[0], "layer": layer, "backend": backend, "K": 64, "N": 64, "M": 1,
                             "status": "ok", "median_ms": ms, "bytes": 1e6, "flops": 1e6})
            on_progress({"roofline": roof, "rows": list(rows), "backends": ["cublas_bfloat16", "triton_w4a16_g128"]})
            (path,) = tmp_path.glob("*_kernels_*.json")
            seen.append((read_record(path)["status"], len(read_record(path)["metrics"]["rows"])))
        return {"roofline": roof, "rows": rows, "backends": ["cublas_bfloat16", "triton_w4a16_g128"]}

    monkeypatch.setattr(kb, "run_benchmark", fake_benchmark)
    kb.main([str(tmp_path), "--models", "llama-3-8b", "--m", "1"])
    assert seen == [("partial", 2), ("partial", 4)]
    (path,) = tmp_path.glob("*_kernels_*.json")
    rec = read_record(path)
    assert rec["status"] == "ok" and len(rec["metrics"]["rows"]) == 4
    partial = rec | {"status": "partial"}
    frame = kernel_frame([partial])
    assert sorted(frame["layer"].unique()) == ["o", "qkv"] and (frame.loc[frame.backend != "cublas_bfloat16",
                                                                           "speedup"] == 2.0).all()


def test_each_m_is_timed_across_the_backends_together(monkeypatch):
    # peers are compared under the same clocks: per layer shape every backend is built once, then each M is handed
    # to time_peers with all of them (their timed replays interleaved), not one backend's M values after another's
    import harness.metrics.kernels as kb

    calls, builds = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kb, "measure_roofline", lambda device: kb.Roofline(1.0, 1.0, None))
    monkeypatch.setattr(kb, "l2_flush_buffer", lambda device: None)
    monkeypatch.setattr(kb, "_build", lambda b, K, N, device: (builds.append(b.name), (None, None))[1])

    def fake_peers(built, K, N, m, device, roof, **kw):
        calls.append((K, N, m, [b.name for b, _, _ in built]))
        return [{"backend": b.name, "K": K, "N": N, "M": m, "status": "failed", "reason": "fake"} for b, _, _ in built]

    monkeypatch.setattr(kb, "time_peers", fake_peers)
    out = kb.run_benchmark(["llama-3-8b"], [1, 16], ["cublas_bfloat16", "cublas_float16"], device="cuda",
                           layers=["o"], log=lambda *a: None)
    names = ["cublas_bfloat16", "cublas_float16"]
    assert builds == names
    assert calls == [(4096, 4096, 1, names), (4096, 4096, 16, names)]
    assert [(r["backend"], r["M"]) for r in out["rows"]] == [(n, m) for m in (1, 16) for n in names]


def test_time_peers_times_the_fast_ops_together_and_the_slow_ones_after(monkeypatch):
    # rows come back in the backends' order, whatever happened to each: timed together (fast), timed alone after
    # the others (slow, so a heavy op never runs just before the fast ones are timed), unavailable, failed
    import harness.metrics.kernels as kb

    events = []

    def op(tag, ms):
        def run(x):
            if tag == "broken":
                raise RuntimeError("no kernel for this shape")
            return tag, ms
        return run, 1000, torch.float32

    def fake_cuda_time(fn, warmup, iters, flush=None):
        return fn()[1], 0.0, 0.0

    def fake_interleaved(fns, warmup, iters, flush):
        events.append(("together", [fn()[0] for fn in fns]))
        return [(1.0, 1.0, 1.0, "cuda_graph") for _ in fns]

    def fake_graph(fn, warmup, iters, flush):
        events.append(("alone", fn()[0]))
        return 50.0, 50.0, 50.0, "cuda_graph"

    monkeypatch.setattr(kb, "cuda_time_ms", fake_cuda_time)
    monkeypatch.setattr(kb, "interleaved_time_ms", fake_interleaved)
    monkeypatch.setattr(kb, "graph_time_ms", fake_graph)
    names = ["slow", "fast", "absent", "broken", "fast2"]
    built = [(kb.Backend("slow", None), op("slow", 20.0), None), (kb.Backend("fast", None), op("fast", 0.1), None),
             (kb.Backend("absent", None), None, "needs a CUDA GPU"),
             (kb.Backend("broken", None), op("broken", 0.1), None), (kb.Backend("fast2", None), op("fast2", 0.2), None)]
    rows = kb.time_peers(built, 64, 64, 4, torch.device("cpu"), kb.Roofline(1.0, 1.0, None), settle_ms=0)
    assert [r["backend"] for r in rows] == names
    assert [r["status"] for r in rows] == ["ok", "ok", "unavailable", "failed", "ok"]
    assert rows[0]["median_ms"] == 50.0 and rows[1]["median_ms"] == 1.0
    assert "no kernel for this shape" in rows[3]["reason"] and rows[2]["reason"] == "needs a CUDA GPU"
    assert events == [("together", ["fast", "fast2"]), ("alone", "slow")]


def test_speedups_against_a_disturbed_baseline_are_left_out():
    # a baseline point whose median took > 2x its fastest run (half its runs disturbed: another process, a clock
    # drop) would make every peer look 10x faster: the report leaves those speedups out; one slow run (M = 2: a
    # high max, the median fine) does not
    from harness.plots import kernel_frame

    rows = []
    for M, spread, top in ((1, 1.1, 1.2), (2, 1.1, 14.0), (8, 9.0, 1.6)):
        rows += [{"model": "m", "layer": "o", "backend": "cublas_bfloat16", "K": 64, "N": 64, "M": M, "status": "ok",
                  "median_ms": 0.2, "min_ms": 0.2 / spread, "max_ms": 0.2 * top},
                 {"model": "m", "layer": "o", "backend": "triton_w4a16_g128", "K": 64, "N": 64, "M": M,
                  "status": "ok", "median_ms": 0.1, "min_ms": 0.1, "max_ms": 0.1}]
    rec = {"kind": "kernels", "status": "ok", "created_at": "2026-11-28T00:00:00", "run_id": "r", "env": {},
           "metrics": {"rows": rows}}
    frame = kernel_frame([rec]).set_index(["backend", "M"])
    assert frame.loc[("triton_w4a16_g128", 1), "speedup"] == frame.loc[("triton_w4a16_g128", 2), "speedup"] == 2.0
    assert pd.isna(frame.loc[("triton_w4a16_g128", 8), "speedup"])
    assert frame.loc[("triton_w4a16_g128", 8), "median_ms"] == 0.1  # the measurement itself stays


class _FakeNvml:
    """pynvml's calls the sampler makes: an SM clock that drops from 1980 to 1500 MHz on the fourth reading, board
    power of 650 W (instantaneous field; `instant=False`: a driver without it, whose averaged reading says 640 W)."""
    NVML_CLOCK_SM = 1
    NVML_FI_DEV_POWER_INSTANT = 186

    def __init__(self, instant=True):
        self.reads = 0
        self.instant = instant

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetClockInfo(self, handle, kind):
        assert kind == self.NVML_CLOCK_SM
        self.reads += 1
        return 1980 if self.reads <= 3 else 1500

    def nvmlDeviceGetFieldValues(self, handle, ids):
        import types

        assert ids == [self.NVML_FI_DEV_POWER_INSTANT]
        if callable(self.instant):  # a driver whose answer changes between readings
            ok = self.instant(self.reads)
        else:
            ok = self.instant
        return [types.SimpleNamespace(nvmlReturn=0 if ok else 2, valueType=1,
                                      value=types.SimpleNamespace(uiVal=650_000))]  # milliwatts

    def nvmlDeviceGetPowerUsage(self, handle):
        return 640_000


def test_gpu_sampler_summarises_clock_and_power_while_a_block_runs(monkeypatch):
    # NVML is polled on a thread while the timed block runs; the summary gives the clock's median/min/max and the
    # board power's median/max (instantaneous where the driver has it), and the row carries it; off CUDA, or
    # without pynvml, there is no summary and no row field
    import sys
    import time

    from harness.metrics import gpu_state

    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpu_state._nvml.cache_clear()
    with gpu_state.GpuSampler(torch.device("cuda", 0), period_s=0.001) as gpu:
        deadline = time.monotonic() + 10
        while fake.reads < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
    s = gpu.summary()
    assert s["samples"] == fake.reads >= 9  # the polls and one reading as the block ends
    assert s["sm_clock_mhz"]["max"] == 1980 and s["sm_clock_mhz"]["min"] == 1500
    assert s["sm_clock_mhz"]["median"] == 1500
    assert s["power_w"] == {"median": 650.0, "max": 650.0, "source": "instant"}
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(instant=False))
    gpu_state._nvml.cache_clear()
    with gpu_state.GpuSampler(torch.device("cuda", 0), period_s=0.001) as avg:
        time.sleep(0.01)
    assert avg.summary()["power_w"] == {"median": 640.0, "max": 640.0, "source": "average"}
    # the first reading decides the source: instant readings that later fail are skipped, never mixed with averages
    flaky = _FakeNvml(instant=lambda reads: reads <= 2)
    monkeypatch.setitem(sys.modules, "pynvml", flaky)
    gpu_state._nvml.cache_clear()
    with gpu_state.GpuSampler(torch.device("cuda", 0), period_s=0.001) as late:
        while flaky.reads < 6:
            time.sleep(0.002)
    got = late.summary()
    assert got["power_w"]["source"] == "instant" and len(late.power_w) == 2 < got["samples"]
    slow = _FakeNvml(instant=lambda reads: reads > 2)  # no instant field at first: averages from then on
    monkeypatch.setitem(sys.modules, "pynvml", slow)
    gpu_state._nvml.cache_clear()
    with gpu_state.GpuSampler(torch.device("cuda", 0), period_s=0.001) as first:
        while slow.reads < 6:
            time.sleep(0.002)
    assert first.summary()["power_w"] == {"median": 640.0, "max": 640.0, "source": "average"}
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpu_state._nvml.cache_clear()
    with gpu_state.GpuSampler(torch.device("cpu")) as off:
        pass
    assert off.summary() is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    gpu_state._nvml.cache_clear()
    with gpu_state.GpuSampler(torch.device("cuda", 0)) as none:
        pass
    assert none.summary() is None
    gpu_state._nvml.cache_clear()

    import harness.metrics.kernels as kb

    backend = kb.Backend("b", lambda K, N, device: None)
    row = kb._row(backend, 64, 64, 1, 1000, torch.zeros(1, 64), kb.Roofline(1.0, 1.0, None), (0.1, 0.1, 0.1, "graph"),
                  None, s)
    assert row["gpu_state"] == s
    assert "gpu_state" not in kb._row(backend, 64, 64, 1, 1000, torch.zeros(1, 64), kb.Roofline(1.0, 1.0, None),
                                      (0.1, 0.1, 0.1, "graph"), None, None)


def test_a_w4a16_row_records_the_path_and_tiles_it_ran():
    # our W4A16 backend's op says what w4a16_matmul runs for its x (kernels.w4a16.chosen_config)
    import harness.metrics.kernels as kb
    from kernels import w4a16

    backend = next(b for b in kb.w4a16_backends(128) if b.name == "triton_w4a16_g128")
    run, w_bytes, dtype = backend.build(256, 128, torch.device("cpu"))
    x = torch.randn(3, 256, dtype=dtype)
    roof = kb.Roofline(1.0, 1.0, None)
    row = kb._row(backend, 256, 128, 3, w_bytes, x, roof, (0.1, 0.1, 0.1, "graph"), None, None, run)
    assert row["kernel"] == run.kernel(x) and row["kernel"]["path"] in w4a16.PATHS
    assert "kernel" not in kb._row(backend, 256, 128, 3, w_bytes, x, roof, (0.1, 0.1, 0.1, "graph"), None, None,
                                   lambda x: x)
