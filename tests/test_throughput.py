"""End-to-end throughput on CPU: tokens counted right, consistent figures, memory accounted, static-cache decode
equal to HF's dynamic-cache generate, real-size presets, speed-only quantization of random weights."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, LlamaConfig

from harness.config import ModelConf, register_configs
from harness.metrics.decode import CHECK_REL_TOL, DecodeCheckError, StaticDecoder, resolve_mode
from harness.metrics.throughput import LEGACY_KEYS, _setup_mode, throughput
from harness.models import PRESET_DIR, load_config, load_model, random_model, resolve_model_path

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def tiny_config(**kw) -> LlamaConfig:
    return LlamaConfig(**{**dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2), **kw})


@pytest.fixture(scope="module")
def tiny():
    return random_model(tiny_config(), torch.float32, CPU).eval()


@pytest.fixture(scope="module")
def trained(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _sum_bytes(model) -> int:
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_points_count_tokens_and_figures_are_consistent(tiny):
    P, G, reps = 8, 5, 3
    res = throughput(tiny, vocab_size=128, batch_sizes=[1, 3], prompt_len=P, gen_len=G, warmup=1, repeats=reps,
                     prefill_lens=[16], prefill_batch_size=2).as_dict()
    cfg = tiny.config
    assert [p["batch_size"] for p in res["points"]] == [1, 3]
    for p in res["points"]:
        b = p["batch_size"]
        assert (p["prompt_len"], p["gen_len"]) == (P, G)
        assert p["prefill_tokens"] == b * P and p["decode_tokens"] == b * G
        for name in ("prefill_s", "decode_s", "e2e_latency_s"):
            runs = p[f"{name}_runs"]
            assert len(runs) == reps and all(math.isfinite(x) and x > 0 for x in runs)
            assert p[f"{name}_min"] <= p[name] <= p[f"{name}_max"]
        # each run's end-to-end time is its prefill plus its gen_len decode steps
        for pre, dec, e2e in zip(p["prefill_s_runs"], p["decode_s_runs"], p["e2e_latency_s_runs"]):
            assert e2e == pytest.approx(pre + dec, rel=1e-9)
        assert p["prefill_tokens_per_s"] == pytest.approx(b * P / p["prefill_s"])
        assert p["decode_tokens_per_s"] == pytest.approx(b * G / p["decode_s"])
        assert p["time_to_first_token_s"] == p["prefill_s"]
        assert p["time_per_output_token_s"] == pytest.approx(p["decode_s"] / G)
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        kv = 2 * cfg.num_hidden_layers * b * cfg.num_key_value_heads * (P + G) * head_dim * 4  # float32 K and V
        assert p["kv_cache_bytes"] == kv
        assert p["decode_mode"] == "eager" and p["decode_mode_reason"] == "auto: eager on CPU"
        assert p["peak_memory_bytes"] > res["weight_memory_bytes"]
    (pre,) = res["prefill_points"]
    assert (pre["batch_size"], pre["prompt_len"], pre["prefill_tokens"]) == (2, 16, 32)
    assert pre["prefill_tokens_per_s"] == pytest.approx(32 / pre["prefill_s"])
    assert (pre["prefill_mode"], pre["prefill_mode_reason"]) == ("eager", "requested")
    assert res["weight_memory_bytes"] == _sum_bytes(tiny)
    assert res["memory_kind"] == "process_max_rss" and res["timer"] == "perf_counter"
    assert (res["decode_mode"], res["prefill_mode"], res["kv_cache"]) == ("eager", "eager", "static")
    # the keys records had before points existed describe the first point
    assert all(res[k] == res["points"][0][k] for k in LEGACY_KEYS)


def test_static_cache_decode_equals_hf_dynamic_cache_generate(trained):
    B, P, G = 2, 12, 6
    prompt = torch.randint(0, trained.config.vocab_size, (B, P), generator=torch.Generator().manual_seed(3))
    dec = StaticDecoder(trained, B, P, G)
    first = dec.prefill(prompt)
    for _ in range(G):
        dec.step()
    ours = torch.cat([first, dec.tokens], dim=1)
    with torch.no_grad():
        ref = trained.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=G + 1,
                               min_new_tokens=G + 1, do_sample=False)[:, P:]
    assert torch.equal(ours, ref)
    # a second run over the same (reset) cache gives the same tokens
    assert torch.equal(dec.generate(prompt), ref[:, 1:])


def test_replay_check_accepts_a_faithful_step_and_rejects_a_wrong_one(trained):
    B, P, G = 2, 10, 4
    prompt = torch.randint(0, trained.config.vocab_size, (B, P), generator=torch.Generator().manual_seed(5))
    dec = StaticDecoder(trained, B, P, G)
    reference = dec.eager_reference(prompt, steps=3)  # taken in eager mode, before the "capture"
    dec.mode, dec._compiled = "compile", dec._step  # a "replayed" step that computes exactly the eager one
    check = dec.check_against(reference, prompt)
    assert check["steps"] == 3 and check["tokens_equal"] and check["max_abs_logit_diff"] == 0.0
    assert check["rel_rms_diff"] == 0.0 and check["noise_batch_size"] == 1
    # the first row decoded alone (batch 1) runs other kernels than at batch 2: its own noise is measured, small
    assert 0.0 <= check["noise_rel_rms"] < 1e-3 and check["rel_rms_limit"] == CHECK_REL_TOL["compile"] == 0.10

    def wrong_input():  # a replay that reads a stale input buffer
        dec.ids.zero_()
        return dec._step()

    dec._compiled = wrong_input
    with pytest.raises(DecodeCheckError, match="batch 2: logits differ from eager"):
        dec.check_against(reference, prompt)


def _noisy(t: torch.Tensor, rel: float, gen: torch.Generator) -> torch.Tensor:
    """t plus Gaussian noise of `rel` times each row's RMS."""
    return t + rel * t.norm(dim=-1, keepdim=True) / t.shape[-1] ** 0.5 * torch.randn(t.shape, generator=gen)


def _noisy_model_reference(model, B, seed, noise):
    """A decoder and its eager reference, where decoding at another batch size moved the logits by `noise`
    (relative RMS per row): a noisy model emulated by perturbing the reference's sub-batch logits."""
    prompt = torch.randint(0, model.config.vocab_size, (B, 10), generator=torch.Generator().manual_seed(seed))
    dec = StaticDecoder(model, B, 10, 3)
    ref = dec.eager_reference(prompt, steps=2)
    gen = torch.Generator().manual_seed(0)
    return dec, prompt, ref._replace(sub_logits=[_noisy(t, noise, gen) for t in ref.sub_logits]), gen


@pytest.mark.parametrize("mode, factor", [("cuda_graph", 2.0), ("compile", 3.0)])
def test_replay_check_allows_the_models_own_kernel_order_noise_only(trained, mode, factor):
    # A model whose logits move by x% when only the batch size changes may move by up to 2x% in a graph replay
    # (3x% compiled: Inductor rounds fused ops once); the noise is measured, not assumed.
    dec, prompt, ref, gen = _noisy_model_reference(trained, 2, 6, 0.2)
    replay_noise = {"within": 0.2 * (factor - 0.5), "beyond": 0.2 * (factor + 0.5)}
    base = dec._step
    for case, rel in replay_noise.items():
        def replay(rel=rel):
            out = base()
            out.copy_(_noisy(out.float(), rel, gen).to(out.dtype))
            return out

        dec.mode, dec._compiled = mode, replay
        if case == "within":
            check = dec.check_against(ref, prompt)
            assert 0.15 < check["noise_rel_rms"] < 0.25
            assert check["rel_rms_limit"] == factor * check["noise_rel_rms"]
        else:
            with pytest.raises(DecodeCheckError, match="kernel-order noise"):
                dec.check_against(ref, prompt)


def test_replay_check_catches_one_wrong_sequence_in_a_noisy_batch(trained):
    # Compared per sequence: one stale row among 8 fails even where the limit is wide (a noisy model's floor),
    # though over the whole batch it would move the logits by only ~1/sqrt(8) of their norm.
    dec, prompt, ref, _ = _noisy_model_reference(trained, 8, 8, 0.25)
    assert ref.sub_logits[0].shape[0] == 4  # half the batch decoded at batch 4

    def one_stale_row():
        dec.ids[3] = 0
        return dec._step()

    dec.mode, dec._compiled = "compile", one_stale_row
    with pytest.raises(DecodeCheckError, match="batch 8: logits differ") as e:
        dec.check_against(ref, prompt)
    # the stale row differs by more than 100% of its logits' norm, the batch as a whole by ~41%, under the
    # compiled step's limit (3x the noise)
    rel, limit = (float(v) for v in re.search(r"by ([\d.]+) .* limit ([\d.]+)", str(e.value)).groups())
    assert rel > 1.0 and 0.65 < limit < 0.9


def test_a_failed_capture_falls_back_to_eager_under_auto_only(tiny):
    dec = StaticDecoder(tiny, 1, 4, 2)
    prompt = torch.zeros((1, 4), dtype=torch.long)

    def broken(_prompt):
        raise RuntimeError("operation not permitted when stream is capturing")

    dec.capture = dec.compile = broken
    used, reason = _setup_mode(dec, "cuda_graph", "auto", prompt)
    assert used == "eager" and dec.mode == "eager"
    assert "cuda_graph failed" in reason and "not permitted" in reason and "fell back to eager" in reason
    with pytest.raises(RuntimeError, match="decode_mode=compile failed.*decode_mode=eager"):
        _setup_mode(dec, "compile", "compile", prompt)


def test_bad_throughput_options_are_refused(tiny):
    with pytest.raises(ValueError, match="decode_mode=cuda_graph needs a CUDA device"):
        resolve_mode("cuda_graph", CPU)
    with pytest.raises(ValueError, match="decode_mode='fast'"):
        resolve_mode("fast", CPU)
    with pytest.raises(ValueError, match="batch_sizes"):
        throughput(tiny, vocab_size=128, batch_sizes=[])
    with pytest.raises(ValueError, match="batch_sizes"):
        throughput(tiny, vocab_size=128, batch_sizes=[0, 1])
    with pytest.raises(ValueError, match="gen_len"):
        throughput(tiny, vocab_size=128, gen_len=0)
    with pytest.raises(ValueError, match="prefill_mode=cuda_graph needs a CUDA device"):
        throughput(tiny, vocab_size=128, prefill_lens=[8], prefill_mode="cuda_graph")
    with pytest.raises(ValueError, match="prefill_mode='graph'"):
        throughput(tiny, vocab_size=128, prefill_mode="graph")
    auto = throughput(tiny, vocab_size=128, prompt_len=8, gen_len=2, repeats=1, prefill_lens=[8],
                      prefill_mode="auto").as_dict()
    assert auto["prefill_mode"] == "eager" and auto["prefill_points"][0]["prefill_mode_reason"] == "auto: eager"


def test_shipped_presets_carry_the_real_architectures():
    l2 = load_config(resolve_model_path("preset:llama-2-7b"))
    assert (l2.hidden_size, l2.num_hidden_layers, l2.num_attention_heads, l2.num_key_value_heads,
            l2.intermediate_size, l2.vocab_size) == (4096, 32, 32, 32, 11008, 32000)
    l3 = load_config(resolve_model_path("preset:llama-3-8b"))
    assert (l3.hidden_size, l3.num_hidden_layers, l3.num_attention_heads, l3.num_key_value_heads,
            l3.intermediate_size, l3.vocab_size) == (4096, 32, 32, 8, 14336, 128256)
    rope = getattr(l3, "rope_parameters", None) or {"rope_theta": l3.rope_theta}
    assert rope["rope_theta"] == 500000.0
    # the Hydra presets point at them, with random weights
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for preset, name in (("llama2_7b", "preset:llama-2-7b"), ("llama3_8b", "preset:llama-3-8b")):
            cfg = compose("config", overrides=[f"model={preset}", "bench=throughput_gpu"])
            assert cfg.model.name_or_path == name and cfg.model.random_weights is True
        assert list(cfg.bench.throughput.batch_sizes) == [1, 8, 32, 128]
        assert cfg.bench.throughput.prefill_lens == [2048] and not cfg.bench.perplexity.enabled


def test_config_only_directory_loads_with_random_weights(tmp_path):
    cfg = json.loads((PRESET_DIR / "llama-3-8b" / "config.json").read_text())
    cfg |= dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=256)  # the Llama-3 architecture, tiny
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load_model(ModelConf(name_or_path=str(tmp_path), random_weights=True), CPU)
    assert loaded.tokenizer is None
    model = loaded.model
    assert model.config.num_key_value_heads == 2 and model.lm_head.out_features == 256
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32


def test_bad_model_configs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown model preset 'llama-9b'.*llama-2-7b"):
        resolve_model_path("preset:llama-9b")
    with pytest.raises(ValueError, match="has no config.json"):
        load_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the model config"):
        load_config(str(tmp_path))


def _run(tmp_path, *overrides):
    from harness.runner import run

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"results_dir={tmp_path / 'results'}", "progress=false", *overrides])
    return run(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_config().save_pretrained(d)
    return d


SMALL_SPEED = ("bench=throughput", "bench.throughput.batch_sizes=[1,2]", "bench.throughput.prompt_len=8",
               "bench.throughput.gen_len=3", "bench.throughput.repeats=1", "bench.throughput.warmup=0")


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_random_weights_are_quantized_speed_only_into_the_method_layout(tmp_path, tiny_dir, method):
    rec = _run(tmp_path, f"model.name_or_path={tiny_dir}", "model.random_weights=true", f"method={method}",
               *SMALL_SPEED)
    assert rec["status"] == "ok" and rec["method"]["speed_only"] is True
    assert rec["model"]["random_weights"] is True
    assert rec["model"]["quantized_layers"] == 2 * 7  # every linear of both blocks; lm_head stays
    t = rec["metrics"]["throughput"]
    assert [p["batch_size"] for p in t["points"]] == [1, 2]
    assert [p["decode_tokens"] for p in t["points"]] == [3, 6]
    # weight memory is the quantized model's: packed 4-bit codes are smaller than the float32 weights
    assert t["weight_memory_bytes"] == rec["model"]["weight_bytes"]
    assert t["weight_memory_bytes"] < _sum_bytes(random_model(tiny_config(), torch.float32, CPU))
    (path,) = (tmp_path / "results").glob("*.json")
    assert json.loads(path.read_text())["metrics"]["throughput"]["points"] == t["points"]


def test_compiled_decode_of_a_quantized_model_matches_eager(tmp_path, tiny_dir):
    # torch.compile over GPTQ layers: each quantized matmul is one opaque op (kernels.w4a16.w4a16_matmul_op), and
    # the compiled decode steps pass the check against eager steps from the same prompt
    rec = _run(tmp_path, f"model.name_or_path={tiny_dir}", "model.random_weights=true", "method=gptq",
               *SMALL_SPEED, "bench.throughput.decode_mode=compile", "bench.throughput.check_steps=2")
    assert rec["status"] == "ok", rec.get("error")
    t = rec["metrics"]["throughput"]
    assert t["decode_mode"] == "compile"
    for p in t["points"]:
        check = p["decode_check"]
        assert check["steps"] == 2 and check["rel_rms_diff"] <= check["rel_rms_limit"]
        # one dynamo graph per point (a fresh cache per decoder), and the step compiled whole
        assert p["compile"] == {"graphs": 1, "graph_breaks": 0}


def test_compiled_prefill_of_a_quantized_model_matches_eager(tmp_path, tiny_dir):
    # prefill_mode=compile: the prefill-only point runs torch.compiled (one graph, GPTQ matmuls opaque) and passes
    # the check against the eager prefill's logits before it is timed
    rec = _run(tmp_path, f"model.name_or_path={tiny_dir}", "model.random_weights=true", "method=gptq",
               *SMALL_SPEED, "bench.throughput.prefill_lens=[16]", "bench.throughput.prefill_mode=compile")
    assert rec["status"] == "ok", rec.get("error")
    t = rec["metrics"]["throughput"]
    (pre,) = t["prefill_points"]
    assert t["prefill_mode"] == pre["prefill_mode"] == "compile" and pre["prefill_mode_reason"] == "requested"
    assert pre["prefill_check"]["rel_rms_diff"] <= pre["prefill_check"]["rel_rms_limit"]
    assert pre["prefill_check"]["first_tokens_equal"]
    assert pre["compile"] == {"graphs": 1, "graph_breaks": 0}
    assert pre["prefill_tokens_per_s"] == pytest.approx(16 / pre["prefill_s"])


def test_the_quantized_matmul_compiles_without_graph_breaks():
    from kernels import w4a16
    from methods.gptq import linear  # noqa: F401  (the method module that calls the op when compiling)

    gen = torch.Generator().manual_seed(0)
    K, N, group = 256, 48, 64
    qweight = w4a16.pack_int_weights(torch.randint(0, 16, (K, N), generator=gen), 4)
    scales = torch.rand(K // group, N, generator=gen) * 0.02 + 0.002
    zeros = w4a16.premultiply_zeros(torch.full((K // group, N), 8.0), scales)
    x = torch.randn(3, K, generator=gen)

    def f(x):
        return torch.nn.functional.silu(w4a16.w4a16_matmul_op(x, qweight, scales, zeros, None, None, group, 4,
                                                               "torch")) * 2

    compiled = torch.compile(f, fullgraph=True)  # fullgraph: any graph break is an error
    torch.testing.assert_close(compiled(x), f(x))
    eager = torch.nn.functional.silu(w4a16.w4a16_matmul(x, qweight, scales, zeros, None, group, 4)) * 2
    torch.testing.assert_close(f(x), eager)


def test_random_weights_without_tokenizer_refuse_perplexity(tmp_path, tiny_dir):
    with pytest.raises(ValueError, match="no tokenizer.*bench=throughput"):
        _run(tmp_path, f"model.name_or_path={tiny_dir}", "model.random_weights=true", "bench=perplexity")
    (path,) = (tmp_path / "results").glob("*.json")
    assert json.loads(path.read_text())["status"] == "failed"


def test_speedup_table_divides_by_the_unquantized_run_at_the_same_point(tmp_path, capsys):
    from harness import records, speedup

    def point(b, decode_tps, prefill_tps):
        return {"batch_size": b, "prompt_len": 16, "gen_len": 4, "decode_tokens_per_s": decode_tps,
                "prefill_tokens_per_s": prefill_tps, "time_to_first_token_s": 0.1, "time_per_output_token_s": 0.01,
                "peak_memory_bytes": 2**30, "decode_mode": "cuda_graph"}

    for method, scale in (("none", 1.0), ("gptq", 3.0)):
        rec = records.new_record({"model": {"name_or_path": "preset:llama-2-7b"}, "method": {"quant_method": method}})
        rec |= {"status": "ok", "method": {"quant_method": method},
                "metrics": {"throughput": {"weight_memory_bytes": 2**30,
                                           "points": [point(b, scale * 10 * b, 100.0) for b in (1, 8)],
                                           "prefill_points": []}}}
        records.write_record(rec, tmp_path / "records")
    assert speedup.main([str(tmp_path / "records"), "--out", str(tmp_path / "speedup.md"), "--compact"]) == 0
    table = speedup.with_speedup(speedup.points_frame(records.iter_records([tmp_path / "records"])))
    gptq = table[table["method"] == "gptq"].set_index("batch")
    assert list(gptq.index) == [1, 8]
    assert gptq["decode x"].tolist() == pytest.approx([3.0, 3.0]) and gptq["prefill x"].tolist() == [1.0, 1.0]
    assert "| gptq" in (tmp_path / "speedup.md").read_text() and "decode x" in capsys.readouterr().out


def test_fused_projections_through_the_runner(tmp_path, tiny_dir):
    from harness.speedup import points_frame

    rec = _run(tmp_path, f"model.name_or_path={tiny_dir}", "model.random_weights=true", "method=gptq",
               "model.fuse_projections=true", *SMALL_SPEED)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["model"]["fused_projections"] == 2 * 2  # q/k/v and gate/up in each of the 2 layers
    assert rec["model"]["quantized_layers"] == 2 * 7  # quantized layer by layer, fused afterwards
    # the speedup table keeps fused runs apart from unfused ones
    assert set(points_frame([rec])["setup"]) == {"eager+fused"}


@pytest.mark.parametrize("scheme", ["dynamic", "static"])
def test_compiled_decode_of_fp8_is_one_graph_and_passes_the_check(scheme):
    # FP8 layers run as one opaque op under torch.compile (kernels.fp8.fp8_linear_op): no graph break in the Python
    # around the quantization and GEMM (nor in the static scheme's calibration check)
    import methods

    torch.manual_seed(0)
    model = random_model(tiny_config(), torch.float32, CPU).eval()
    gen = torch.Generator().manual_seed(7)
    calib = [torch.randint(0, 128, (1, 16), generator=gen)] if scheme == "static" else None
    methods.get_method_class("fp8").from_dict({"activation_scheme": scheme}).prepare_model(model, calib,
                                                                                        progress=False)
    prompt = torch.randint(0, 128, (2, 6), generator=gen)
    dec = StaticDecoder(model, 2, 6, 4)
    reference = dec.eager_reference(prompt, steps=3)
    dec.compile(prompt)
    assert dec.compile_stats == {"graphs": 1, "graph_breaks": 0}
    check = dec.check_against(reference, prompt)
    assert check["steps"] == 3 and check["rel_rms_diff"] <= check["rel_rms_limit"]


def test_noise_batch_changes_the_batch_and_keeps_the_compared_rows_first():
    from harness.metrics.decode import floor_rows, noise_prompt

    one = torch.arange(6).reshape(1, 6)
    b1 = noise_prompt(one, floor_rows(1))  # batch 1: the sequence beside another, never a copy of itself
    assert b1.shape == (2, 6) and torch.equal(b1[0], one[0]) and not torch.equal(b1[1], one[0])
    four = torch.arange(24).reshape(4, 6)
    assert torch.equal(noise_prompt(four, floor_rows(4)), four[:2])  # half the batch, alone


def test_split_kv_attention_run_records_its_implementation(tmp_path, tiny_dir):
    # model.attn_implementation=split_kv end to end (interpreted on CPU): decode checked against eager steps of the
    # same implementation; the record says which attention ran, and the speedup table keeps it apart
    from harness.speedup import setup

    rec = _run(tmp_path, f"model.name_or_path={tiny_dir}", "model.random_weights=true", "method=none",
               *SMALL_SPEED, "model.attn_implementation=split_kv")
    assert rec["status"] == "ok", rec.get("error")
    assert rec["config"]["model"]["attn_implementation"] == "split_kv"
    assert setup(rec, rec["metrics"]["throughput"]["points"][0]).endswith("+attn=split_kv")


def test_pdl_asks_for_a_compiled_step_on_a_hopper_gpu(tiny):
    # bench.throughput.pdl: the compiled step's kernels launch with programmatic dependent launch; anywhere else
    # a clear error, before any decoding
    with pytest.raises(ValueError, match="pdl=true applies to the compiled decode step.*decode_mode=compile"):
        throughput(tiny, vocab_size=128, prompt_len=6, gen_len=2, repeats=1, decode_mode="eager", pdl=True)
    with pytest.raises(ValueError, match=r"pdl=true needs a CUDA GPU of compute capability >= 9.0.*cpu.*pdl=false"):
        throughput(tiny, vocab_size=128, prompt_len=6, gen_len=2, repeats=1, decode_mode="compile", pdl=True)
    point = throughput(tiny, vocab_size=128, prompt_len=6, gen_len=2, repeats=1, warmup=0).points[0]
    assert point["pdl"] is False


def test_step_profile_accounts_for_every_gemm_of_the_step(tiny):
    # profile_steps: the step's ops by category, per step; on CPU each op's own time. The tiny Llama's step runs
    # 2 layers x 7 linears + lm_head = 15 GEMMs and one SDPA kernel a layer; the categories add up to the total
    res = throughput(tiny, vocab_size=128, batch_sizes=[2], prompt_len=6, gen_len=4, repeats=1, warmup=0,
                     profile_steps=3)
    prof = res.points[0]["step_profile"]
    assert prof["steps"] == 3 and prof["timed"] == "cpu_self_time"
    assert prof["count_per_step"]["gemm"] == 15
    assert any(r["category"] == "attention" and r["count_per_step"] == 2 for r in prof["top"])
    ms = prof["ms_per_step"]
    assert min(ms.values()) >= 0 and ms["gemm"] > 0 and ms["attention"] > 0
    assert math.isclose(ms["total"], sum(v for k, v in ms.items() if k != "total"), rel_tol=1e-9)
    assert "step_profile" not in throughput(tiny, vocab_size=128, prompt_len=6, gen_len=2, repeats=1).points[0]
    with pytest.raises(ValueError, match="profile_steps needs gen_len >= 2"):
        throughput(tiny, vocab_size=128, gen_len=1, profile_steps=2)


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_one_shared_cache_length_counter_decodes_the_same_bits(tiny, mode):
    # share_cache_length: every layer reads layer 0's counter, only the last advances it; the cache is written
    # where per-layer counters write, so the logits are the same bits
    P, G = 6, 4
    prompt = torch.randint(0, 128, (2, P), generator=torch.Generator().manual_seed(7))
    logits = {}
    for shared in (False, True):
        dec = StaticDecoder(tiny, 2, P, G, shared_length=shared)
        if mode == "compile":
            dec.compile(prompt)
        dec.prefill(prompt)
        steps = [dec.step().clone() for _ in range(G)]
        assert dec.cache_counter == ("shared" if shared else "per_layer")
        counters = {id(layer.cumulative_length) for layer in dec.cache.layers}
        assert len(counters) == (1 if shared else len(dec.cache.layers))
        assert all(int(layer.cumulative_length) == P + G for layer in dec.cache.layers)
        logits[shared] = (torch.stack(steps), dec.tokens.clone(), [layer.keys.clone() for layer in dec.cache.layers])
    assert torch.equal(logits[True][0], logits[False][0]) and torch.equal(logits[True][1], logits[False][1])
    assert all(torch.equal(a, b) for a, b in zip(logits[True][2], logits[False][2]))


def test_sliding_window_caches_keep_their_per_layer_counters():
    from transformers import StaticCache

    from harness.metrics.decode import share_cache_length

    cfg = tiny_config(layer_types=["sliding_attention", "full_attention"], sliding_window=4)
    cache = StaticCache(config=cfg, max_cache_len=8)
    kv = torch.zeros(1, 2, 3, 16)
    for i in range(len(cache.layers)):
        cache.update(kv, kv, i)
    assert [type(layer).__name__ for layer in cache.layers] == ["StaticSlidingWindowLayer", "StaticLayer"]
    assert not share_cache_length(cache)  # a sliding layer keeps its own counting
    assert cache.layers[0].cumulative_length is not cache.layers[1].cumulative_length
