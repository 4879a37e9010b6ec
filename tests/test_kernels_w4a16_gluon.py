"""The warp-specialised Gluon W4A16 GEMM (kernels/w4a16_gluon.py): its refusals everywhere, its sm_90 binary built
on this CPU (register-A wgmmas waited at depth 1, no write to their A registers in flight, no spills), and on a
Hopper GPU its results against the torch reference (Gluon kernels do not run in Triton's interpreter)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from kernels import w4a16 as k
from kernels import w4a16_gluon as g

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9 and g.gluon is not None
needs_hopper = pytest.mark.skipif(not HOPPER, reason="the Gluon kernel runs on Hopper GPUs only (run on the "
                                                     "device machine: pytest tests/test_kernels_w4a16_gluon.py)")


def _layer(K, N, group_size=128, device="cpu"):
    from kernels.w4a16_tune import random_layer

    return random_layer(K, N, device, group_size=group_size)


def test_unsupported_names_the_reason_and_the_path_refuses_with_it(monkeypatch):
    qweight, scales = _layer(256, 64)
    x = torch.randn(4, 256, dtype=torch.float16)
    why = g.unsupported(x, qweight, scales, None, None, 128, 4)
    assert why and ("Hopper" in why or "Gluon" in why or "INTERPRET" in why), why
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cuda_x = type("X", (), {"is_cuda": True, "device": None, "dtype": torch.float16, "shape": (4, 256),
                            "dim": lambda self: 2})()
    if g.gluon is not None:  # past the device check, the layer checks
        assert "zero codes" in g.unsupported(cuda_x, qweight, scales, torch.zeros(2, 64), None, 128, 4)
        assert g.unsupported(cuda_x, qweight, scales, torch.zeros(2, 64, dtype=torch.uint8), None, 128, 4) is None
        assert "4-bit" in g.unsupported(cuda_x, qweight, scales, None, None, 128, 8)
        assert "g_idx" in g.unsupported(cuda_x, qweight, scales, None, torch.zeros(256, dtype=torch.int32), 128, 4)
        assert "fp16" in g.unsupported(cuda_x, qweight, scales.bfloat16(), None, None, 128, 4)
        assert "multiple of 256" in g.unsupported(cuda_x, qweight, scales, None, None, 64, 4)
        assert g.unsupported(cuda_x, qweight, scales, None, None, 128, 4) is None
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors reach the path's own check under the interpreter
    with pytest.raises(ValueError, match="path='gluon' cannot run this call: Gluon kernels do not run under"):
        k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton", path="gluon")
    monkeypatch.setattr(g, "unsupported", lambda *a: None)
    with pytest.raises(ValueError, match="glu=True"):
        k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton", path="gluon", glu=True)
    with pytest.raises(ValueError, match="picks its own tiles"):
        k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton", path="gluon", block_n=64)
    with pytest.raises(ValueError, match="qweight"):  # the layer's shapes, checked before any launch
        g.w4a16_matmul_gluon(x, qweight[:8], scales, 128)


def test_a_tuned_gluon_entry_falls_back_where_the_kernel_cannot_run(monkeypatch):
    # a table entry that names the Gluon kernel must not break a layer it cannot serve: on CPU (interpreted) the
    # kernel's own check refuses; on a GPU a refusal is forced, since this layer would otherwise run on it
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(k, "default_config", lambda *a, **kw: {"path": "gluon"})
    if dev == "cuda":
        monkeypatch.setattr(g, "unsupported", lambda *a: "forced by the test")
    qweight, scales = _layer(256, 64, device=dev)
    x = torch.randn(3, 256, dtype=torch.float16, device=dev)
    y = k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton")
    ref = k.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4)
    assert ((y.float() - ref.float()).norm() / ref.float().norm()).item() < 2e-3
    # with the tuner's fallback in the entry, that config runs (not the untuned choice): here its tiled tiles
    fallback = dict(path="tiled", block_m=16, block_n=32, block_k=32, split_k=1, num_warps=4, num_stages=2)
    monkeypatch.setattr(k, "default_config", lambda *a, **kw: {"path": "gluon", "fallback": fallback | {
        "median_ms": 0.1}})
    monkeypatch.setattr(k, "_heuristic_config", lambda *a, **kw: pytest.fail("the fallback was not used"))
    y = k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton")
    assert ((y.float() - ref.float()).norm() / ref.float().norm()).item() < 2e-3
    # ... and where the kernel could run but the caller names tiles (they belong to the other paths)
    monkeypatch.setattr(g, "unsupported", lambda *a: None)
    y = k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton", block_n=32, block_k=32)
    assert ((y.float() - ref.float()).norm() / ref.float().norm()).item() < 2e-3


@pytest.mark.parametrize("bm,ones,consumers,zeros", [(256, False, 1, False), (128, False, 1, False),
                                                     (128, True, 1, False), (128, False, 2, False),
                                                     (256, False, 1, True), (128, False, 2, True),
                                                     (64, False, 1, False), (64, False, 2, False),
                                                     (256, False, 2, False), (256, False, 2, True)])
def test_gluon_w4a16_binary_waits_at_depth_one_without_a_register_hazards_or_spills(bm, ones, consumers, zeros):
    # ones: the binary a group-128 layer with a bias runs (the launcher specialises integer arguments of 1);
    # zeros: a layer with uint8 zero codes
    if g.gluon is None:
        pytest.skip("this Triton has no Gluon Hopper API")
    import triton

    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "kernels.sass", "w4a16-gluon", "--block-m", str(bm),
                          "--consumers", str(consumers), *(["--ones"] if ones else []),
                          *(["--zero-codes"] if zeros else [])], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    print(stats)
    # both K-blocks of an iteration leave their wgmmas running while the next block's A is made (each consumer
    # partition: two warpgroups in step at 256 tokens are one)
    partitions = 1 if consumers == 1 or bm == 256 else 2
    assert stats["depth1_waits"] >= 2 * partitions
    assert stats["register_a_wgmmas"] > 0 and stats["hazards"] == []
    assert stats["shared"] <= 227 * 1024
    if consumers == 2 and bm == 256:  # two warpgroups in step: Triton's reallocation, the loader's 24 to them
        assert stats["setmaxnreg"] == ["24", "240"]
    if consumers == 1 or bm == 256:  # one consumer partition (of two warpgroups in step at 256 tokens)
        assert stats["spills"] == 0
    else:  # every warp keeps its 168 launch registers: no setmaxnreg left. Triton 3.6 (the GPU machine's): no
        # spills; 3.9 (CI's) builds 32 spill loads/stores (72 with zero codes)
        assert stats["setmaxnreg"] == []
        assert stats["spills"] == 0 if triton.__version__.startswith("3.6") else stats["spills"] <= 72


def test_only_the_two_consumer_kernel_loses_its_register_reallocation():
    ptx = (".visible .entry {name}(\n.reqntid 384\n.maxnreg 168\n{{\n\tsetmaxnreg.inc.sync.aligned.u32 \t256;\n"
           "\tbarrier.sync \t1;\n\tsetmaxnreg.dec.sync.aligned.u32 \t24;\n\tret;\n}}\n")
    other = ptx.format(name="w4a16_ws_kernel")
    if g.gluon is None:
        pytest.skip("this Triton has no Gluon Hopper API")
    assert g._keep_launch_registers(other) == other
    kept = g._keep_launch_registers(ptx.format(name="w4a16_ws2_kernel"))
    assert "setmaxnreg" not in kept and "barrier.sync \t1;" in kept and ".maxnreg 168" in kept


def test_the_pipeline_hook_is_in_place_only_around_the_two_consumer_builds(monkeypatch):
    # inside: ours, chaining the hook found (Triton 3.9 asks every hook for a cache key, with no arguments); nested:
    # no chain onto itself; after: the hook found, so no other kernel's build or cache key ever sees ours
    if g.gluon is None:
        pytest.skip("this Triton has no Gluon Hopper API")
    import triton

    seen = []

    def earlier(*args):
        if not args:
            return "earlier", "e"
        seen.append(args[1])

    monkeypatch.setattr(triton.knobs.runtime, "add_stages_inspection_hook", earlier)
    with g.launch_registers_kept():
        hook = triton.knobs.runtime.add_stages_inspection_hook
        assert hook is g._stages_hook and g._previous_hook is earlier
        with g.launch_registers_kept():
            assert triton.knobs.runtime.add_stages_inspection_hook is hook and g._previous_hook is earlier
        assert triton.knobs.runtime.add_stages_inspection_hook is hook
        key, digest = hook()
        assert key.startswith("earlier") and g._HOOK_KEY in key and digest.startswith("e")
        stages = {"ptx": lambda src, md: ".visible .entry w4a16_ws2_kernel(\n\tsetmaxnreg.dec.sync.aligned.u32 \t24;\n"}
        hook(None, stages, None, None, 90)
        assert seen == [stages] and "setmaxnreg" not in stages["ptx"](None, None)
    assert triton.knobs.runtime.add_stages_inspection_hook is earlier and g._previous_hook is None


def test_the_launch_plan_names_the_kernel_its_warps_registers_and_words_box():
    # one warpgroup; two in step at 256 tokens (one partition of 8 warps, Triton's reallocation from 168); two
    # partitions of 64 rows below (their setmaxnreg stripped)
    assert g.launch_plan(1, 256) == g.LaunchPlan(False, 4, g.MAXNREG, 64, 64)
    assert g.launch_plan(1, 64) == g.launch_plan(1, 128) == g.launch_plan(1, 256)
    assert g.launch_plan(2, 256) == g.LaunchPlan(False, 8, g.MAXNREG_2, 128, 128)
    assert g.launch_plan(2, 128) == g.launch_plan(2, 64) == g.LaunchPlan(True, 4, g.MAXNREG_2, 64, 128)
    # 12 warps at MAXNREG_2 and 8 at MAXNREG fit the 65,536 registers
    assert 12 * 32 * g.MAXNREG_2 <= 65536 and 8 * 32 * g.MAXNREG <= 65536


def test_the_consumer_count_is_checked_first():
    qweight, scales = _layer(256, 192)
    x = torch.randn(4, 256, dtype=torch.float16)
    for bad in (0, 3, True, 2.0):
        with pytest.raises(ValueError, match="use 1 or 2"):
            g.w4a16_matmul_gluon(x, qweight, scales, 128, n_consumers=bad)
    for consumers, tokens in ((1, 32), (2, 512)):
        with pytest.raises(ValueError, match="token tiles of"):
            g.w4a16_matmul_gluon(x, qweight, scales, 128, n_consumers=consumers, tokens=tokens)


@needs_hopper
@pytest.mark.parametrize("zdtype", [torch.uint8, torch.int16])
@pytest.mark.parametrize("M,K,N,group_size,consumers,tokens", [(130, 512, 192, 128, 1, None),
                                                               (300, 1024, 256, 256, 2, None),
                                                               (64, 768, 128, 128, 2, None),
                                                               (513, 2048, 256, -1, 1, None),
                                                               (300, 1024, 384, 128, 2, 256)])
def test_gluon_w4a16_reads_zero_codes(M, K, N, group_size, consumers, tokens, zdtype):
    # asymmetric layers: each group's zero code per column (0-15, not the symmetric 8), every kernel
    from kernels.w4a16_tune import MAX_REL_ERR, rel_err

    torch.manual_seed(M + N)
    qweight, scales = _layer(K, N, group_size, "cuda")
    zeros = torch.randint(0, 16, (k._num_groups(K, group_size), N), device="cuda").to(zdtype)
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    ref = k.w4a16_matmul_ref(x, qweight, scales, zeros, None, group_size, 4, validate=False)
    assert rel_err(k.w4a16_matmul_ref(x, qweight, scales, None, None, group_size, 4, validate=False), ref) > 0.1
    for _ in range(3):
        y = k.w4a16_matmul(x, qweight, scales, zeros, None, group_size, 4, path="gluon", consumers=consumers,
                           block_m=tokens)
        assert rel_err(y, ref) < MAX_REL_ERR


@needs_hopper
@pytest.mark.parametrize("M,K,N,group_size,bias", [(1, 256, 64, 128, None), (130, 512, 192, 128, torch.float16),
                                                   (300, 1024, 256, 256, None), (513, 2048, 128, -1, torch.float32),
                                                   (64, 768, 128, 128, torch.bfloat16), (200, 1024, 64, 384, None)])
def test_gluon_w4a16_matches_the_reference(M, K, N, group_size, bias):
    # partial token tiles (1-513 rows; BM 64, 128 and 256), groups of 1, 2, 3 (not dividing K) and 16 K-blocks, the
    # ring wrapping (its 3-8 slots: K = 2048 is 16 blocks, 768 is 6), biases of three dtypes
    from kernels.w4a16_tune import MAX_REL_ERR, rel_err

    torch.manual_seed(M + K)
    qweight, scales = _layer(K, N, group_size, "cuda")
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    b = torch.randn(N, device="cuda", dtype=bias) if bias is not None else None
    ref = k.w4a16_matmul_ref(x, qweight, scales, None, None, group_size, 4, b, validate=False)
    for _ in range(3):
        y = k.w4a16_matmul(x, qweight, scales, None, None, group_size, 4, b, path="gluon")
        assert y.dtype == torch.float16 and y.shape == (M, N) and torch.isfinite(y).all()
        assert rel_err(y, ref) < MAX_REL_ERR
    y3 = k.w4a16_matmul(x.view(1, M, K), qweight, scales, None, None, group_size, 4, b, path="gluon")
    assert y3.shape == (1, M, N) and torch.equal(y3[0], y)
    for c in (1, 2) if N % 128 == 0 else (1,):  # every kernel (the path picks 2 consumers where N allows)
        for tokens in (None, 64, 128, 256):  # two consumers at 256: the two warpgroups in step
            y = g.w4a16_matmul_gluon(x, qweight, scales, group_size, b, n_consumers=c, tokens=tokens)
            assert rel_err(y, ref) < MAX_REL_ERR, (c, tokens)
    if N % 128:
        with pytest.raises(ValueError, match="N a multiple of 128"):
            g.w4a16_matmul_gluon(x, qweight, scales, group_size, b, n_consumers=2)


def test_the_tuner_keeps_the_best_other_config_beside_a_gluon_winner(monkeypatch):
    # tune_shape's bookkeeping (kernels and timer replaced: this CPU runs neither the Gluon kernel nor CUDA graphs)
    from kernels import w4a16_tune as t

    tiled = dict(path="tiled", block_m=64, block_n=64, block_k=64, split_k=1, num_warps=4, num_stages=3)
    slow = dict(tiled, num_stages=4)
    times = {"gluon": 0.1, 3: 0.2, 4: 0.3}
    monkeypatch.setattr(t, "candidates", lambda *a, **kw: [dict(path="gluon"), tiled, slow])
    monkeypatch.setattr(t, "l2_flush_buffer", lambda device: None)
    monkeypatch.setattr(k, "_num_sms", lambda index: 132)
    monkeypatch.setattr(k, "default_config", lambda *a, **kw: dict(slow, fallback={"path": "gemv"}))
    calls = []

    def fake_matmul(x, qweight, scales, zeros, g_idx, group_size, bits, validate=True, **cfg):
        assert "fallback" not in cfg  # a table entry's fallback is not a launch argument
        calls.append(cfg)
        return k.w4a16_matmul_ref(x, qweight, scales, zeros, g_idx, group_size, bits)

    monkeypatch.setattr(k, "w4a16_matmul_triton", fake_matmul)
    monkeypatch.setattr(t, "graph_time_ms", lambda run, *a: (times[calls[-1].get("num_stages", "gluon")],))
    table = t.tune_shape(256, 64, [200], "cpu", log=lambda *a: None)
    entry = table[k.tuning_key(200, 64, 256, 4, 128, False)]
    assert entry["path"] == "gluon" and entry["median_ms"] == 0.1
    assert entry["fallback"] == tiled | {"median_ms": 0.2}


def test_a_tuned_gluon_entry_passes_its_consumers_and_other_paths_refuse_them(monkeypatch):
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # interpreted on CPU; compiled kernels need CUDA tensors
    qweight, scales = _layer(256, 128, device=dev)
    x = torch.randn(3, 256, dtype=torch.float16, device=dev)
    seen = []
    monkeypatch.setattr(g, "unsupported", lambda *a: None)
    monkeypatch.setattr(g, "w4a16_matmul_gluon", lambda *a, zeros, tokens: seen.append((a[5], tokens)) or "ran")
    monkeypatch.setattr(k, "default_config", lambda *a, **kw: {"path": "gluon", "consumers": 2})
    assert k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4) == "ran"
    assert k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, consumers=1) == "ran"  # the caller's wins
    assert k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, path="gluon", block_m=64) == "ran"
    monkeypatch.setattr(k, "default_config", lambda *a, **kw: {"path": "gluon", "consumers": 1, "block_m": 64})
    assert k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4) == "ran"  # a tuned entry's token tile
    assert seen == [(2, None), (1, None), (2, 64), (1, 64)]  # naming the entry's own path keeps its consumers
    with pytest.raises(ValueError, match="picks its own tiles but block_m"):
        k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, path="gluon", block_n=64)
    with pytest.raises(ValueError, match="consumers=2 is the gluon path's option"):
        k.w4a16_matmul_triton(x, qweight, scales, None, None, 128, 4, path="tiled", consumers=2)


def test_a_frag_fallback_that_cannot_take_the_call_gives_way_to_the_untuned_choice(monkeypatch):
    # bf16 x with the checkpoint's fp16 scales: neither the Gluon kernel nor the fallback's frag tiles take it
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    qweight, scales = _layer(256, 64, device=dev)
    x = torch.randn(3, 256, dtype=torch.bfloat16, device=dev)
    frag = dict(path="frag", block_m=16, block_n=64, block_k=128, split_k=1, num_warps=4, num_stages=3)
    monkeypatch.setattr(k, "default_config", lambda *a, **kw: {"path": "gluon", "consumers": 1, "fallback": frag})
    untuned = []
    heuristic = k._heuristic_config
    monkeypatch.setattr(k, "_heuristic_config", lambda *a, **kw: untuned.append(kw) or heuristic(*a, **kw))
    y = k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton")
    ref = k.w4a16_matmul_ref(x, qweight, scales, None, None, 128, 4)
    assert untuned == [{"frag": False}]
    assert ((y.float() - ref.float()).norm() / ref.float().norm()).item() < 1e-2


def test_chosen_config_names_what_the_dispatch_runs(monkeypatch):
    # kernels.w4a16.chosen_config (what the kernel benchmark records) follows the same resolution as the call
    qweight, scales = _layer(256, 128)
    x = torch.randn(2, 3, 256, dtype=torch.float16)
    frag = dict(path="frag", block_m=16, block_n=64, block_k=128, split_k=1, num_warps=4, num_stages=3)
    monkeypatch.setattr(k, "default_config", lambda *a, **kw: {"path": "gluon", "consumers": 2, "fallback": frag})
    if not HOPPER:
        assert k.chosen_config(x, qweight, scales, None, None, 128, 4) == frag  # the Gluon kernel cannot run here
        # bf16 x with fp16 scales: nor can the fallback's frag tiles
        assert k.chosen_config(x.bfloat16(), qweight, scales, None, None, 128, 4)["path"] not in ("frag", "gluon")
    monkeypatch.setattr(g, "unsupported", lambda *a: None)
    assert k.chosen_config(x, qweight, scales, None, None, 128, 4) == {"path": "gluon", "consumers": 2, "block_m": 128}
    assert k.chosen_config(x, qweight, scales, None, None, 128, 4, consumers=1) == {
        "path": "gluon", "consumers": 1, "block_m": 128}
    assert k.chosen_config(x, qweight, scales, None, None, 128, 4, path="gluon", block_m=64) == {
        "path": "gluon", "consumers": 2, "block_m": 64}
    assert k.chosen_config(x, qweight, scales, None, None, 128, 4, block_n=32)["path"] == "frag"  # tiles named
    tiled = k.chosen_config(x, qweight, scales, None, None, 128, 4, path="tiled", block_m=16, block_k=32)
    assert tiled["path"] == "tiled" and tiled["block_m"] == 16 and tiled["block_k"] == 32
