"""GPTQ on a whole (tiny, random) Llama: online quantization, checkpoint export and reload through the harness
loader, the config keys of real GPTQ checkpoints, and clear errors for bad checkpoints."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

import methods
from harness.config import ModelConf
from harness.models import load_model
from kernels import w4a16
from methods.export import save_checkpoint
from methods.gptq import GPTQConfig, RTNConfig
from methods.gptq.linear import GPTQLinearMethod
from methods.gptq.sequential import quantize_sequential, write_dequantized

VOCAB = 256
CPU = torch.device("cpu")


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def calibration(n: int = 8, seq_len: int = 32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (1, seq_len), generator=g) for _ in range(n)]


PROBE = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(2))


def gptq_layers(model) -> dict:
    return {n: m for n, m in model.named_modules()
            if isinstance(m, methods.QuantLinear) and isinstance(m.method, GPTQLinearMethod)}


def dequantized(layer) -> torch.Tensor:
    """A QuantLinear's weight [N, K] as the W4A16 kernel sees it."""
    g_idx = layer.g_idx if layer.method.act_order else None
    return w4a16.dequantize_ref(layer.qweight, layer.scales, layer.zeros, g_idx, layer.method.group_size,
                                layer.method.bits, layer.in_features).t()


CONFIGS = {
    "w4g32-actorder-asym-v1": dict(bits=4, group_size=32, desc_act=True, sym=False),
    "w8-perchannel-sym-v2": dict(bits=8, group_size=-1, checkpoint_format="gptq_v2"),
    "w4g16-actorder-static": dict(bits=4, group_size=16, desc_act=True, static_groups=True, true_sequential=False),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_online_layers_hold_exactly_the_quantizers_weights(name):
    cfg = GPTQConfig.from_dict(CONFIGS[name])
    reference, model = tiny_llama(), tiny_llama()
    results = {}

    def keep(name, linear, result):
        results[name] = result
        write_dequantized(name, linear, result)

    quantize_sequential(reference, cfg.spec, calibration(), cfg.is_skipped, cfg.true_sequential, progress=False,
                        on_layer=keep)
    swapped = cfg.prepare_model(model, calibration(), progress=False)
    assert sorted(swapped) == sorted(results) and len(swapped) == 14 and "lm_head" not in swapped
    layers = gptq_layers(model)
    for n, layer in layers.items():
        # The packed checkpoint tensors, dequantized the kernel's way, are the quantizer's weights bit for bit.
        assert torch.equal(dequantized(layer), results[n].layer.dequantize()), n
        assert torch.equal(reference.get_submodule(n).weight, results[n].layer.dequantize()), n
    if cfg.desc_act and not cfg.static_groups:
        assert all(layer.method.act_order for layer in layers.values())
    torch.testing.assert_close(model(PROBE).logits, reference(PROBE).logits, rtol=1e-4, atol=1e-4)
    assert cfg.needs_calibration()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", CONFIGS)
def test_quantize_save_load_round_trip_is_bit_exact(name, tmp_path, tokenizer):
    cfg = GPTQConfig.from_dict(CONFIGS[name])
    model = tiny_llama()
    cfg.prepare_model(model, calibration(), progress=False)
    out = save_checkpoint(model, cfg, tmp_path / "ckpt", tokenizer)

    hf = json.loads((out / "config.json").read_text())
    qc = hf["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["bits"] == cfg.bits and qc["group_size"] == cfg.group_size
    assert qc["desc_act"] == cfg.desc_act and qc["sym"] == cfg.sym
    assert qc["checkpoint_format"] == cfg.checkpoint_format
    assert json.loads((out / "quantize_config.json").read_text()) == qc
    state = load_file(str(out / "model.safetensors"))
    per = 32 // cfg.bits
    p = "model.layers.0.mlp.down_proj"
    groups = 1 if cfg.group_size == -1 else 128 // cfg.group_size
    assert state[f"{p}.qweight"].shape == (128 // per, 64) and state[f"{p}.qweight"].dtype == torch.int32
    assert state[f"{p}.qzeros"].shape == (groups, 64 // per) and state[f"{p}.qzeros"].dtype == torch.int32
    assert state[f"{p}.scales"].shape == (groups, 64) and state[f"{p}.scales"].dtype == torch.float16
    assert state[f"{p}.g_idx"].shape == (128,) and state[f"{p}.g_idx"].dtype == torch.int32
    assert "lm_head.weight" not in state and "model.embed_tokens.weight" in state  # tied: saved once

    loaded = load_model(ModelConf(name_or_path=str(out), dtype="float32"), CPU)
    assert isinstance(loaded.checkpoint_method, GPTQConfig) and loaded.checkpoint_method.from_checkpoint
    assert not loaded.checkpoint_method.needs_calibration()
    ours, theirs = gptq_layers(model), gptq_layers(loaded.model)
    assert ours.keys() == theirs.keys()
    for n in ours:
        a, b = ours[n].method.checkpoint_tensors(ours[n]), theirs[n].method.checkpoint_tensors(theirs[n])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), n
        za, zb = ours[n].zeros, theirs[n].zeros  # None: a symmetric layer (the kernel reads no zeros)
        assert (za is None and zb is None) or torch.equal(za, zb)
    assert torch.equal(loaded.model(PROBE).logits, model(PROBE).logits)


def test_rtn_needs_no_calibration_and_writes_the_same_format(tmp_path, tokenizer):
    cfg = RTNConfig.from_dict({"group_size": 32})
    assert not cfg.needs_calibration() and cfg.to_dict()["quant_method"] == "rtn"
    model = tiny_llama()
    cfg.prepare_model(model, None, progress=False)
    out = save_checkpoint(model, cfg, tmp_path / "rtn", tokenizer)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "gptq"
    loaded = load_model(ModelConf(name_or_path=str(out), dtype="float32"), CPU)
    assert torch.equal(loaded.model(PROBE).logits, model(PROBE).logits)
    with pytest.raises(ValueError, match="calibration"):
        GPTQConfig().prepare_model(tiny_llama(), None, progress=False)


def test_autogptq_and_gptqmodel_config_keys():
    autogptq = {"bits": 4, "group_size": 128, "damp_percent": 0.01, "desc_act": True, "static_groups": False,
                "sym": True, "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model",
                "quant_method": "gptq", "checkpoint_format": "gptq"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = methods.QuantizationConfig.from_config({"quantization_config": autogptq})
    assert isinstance(cfg, GPTQConfig) and cfg.from_checkpoint and cfg.desc_act and cfg.bits == 4
    gptqmodel = {"quant_method": "gptq", "bits": 8, "group_size": -1, "sym": False, "format": "gptq_v2",
                 "pack_dtype": "int32", "lm_head": False, "dynamic": {}, "meta": {"quantizer": ["gptqmodel:2.0"]}}
    cfg = methods.QuantizationConfig.from_config(gptqmodel)
    assert cfg.checkpoint_format == "gptq_v2" and cfg.bits == 8 and cfg.group_size == -1 and not cfg.sym
    for bad, match in [({"bits": 3}, "bits=3 is not supported"), ({"lm_head": True}, "lm_head"),
                       ({"checkpoint_format": "marlin"}, "checkpoint_format='marlin'"),
                       ({"dynamic": {"-:.*": {}}}, "dynamic")]:
        with pytest.raises(ValueError, match=match):
            methods.QuantizationConfig.from_config({"quant_method": "gptq"} | bad)
    with pytest.raises(ValueError, match="desc_act"):
        RTNConfig.from_dict({"desc_act": True})


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory, tokenizer):
    cfg = GPTQConfig.from_dict({"bits": 4, "group_size": 32})
    model = tiny_llama()
    cfg.prepare_model(model, calibration(), progress=False)
    return save_checkpoint(model, cfg, tmp_path_factory.mktemp("bad") / "ckpt", tokenizer)


def broken_copy(src, dst, *, config=None, tensors=None):
    """A copy of checkpoint `src` with quantization_config keys replaced and/or tensors edited."""
    import shutil

    shutil.copytree(src, dst)
    if config:
        hf = json.loads((dst / "config.json").read_text())
        hf["quantization_config"].update(config)
        (dst / "config.json").write_text(json.dumps(hf))
    if tensors:
        state = load_file(str(dst / "model.safetensors"))
        tensors(state)
        save_file(state, str(dst / "model.safetensors"))
    return str(dst)


def test_bad_checkpoints_fail_with_errors_naming_the_problem(saved_checkpoint, tmp_path):
    p = "model.layers.1.mlp.up_proj"
    cases = [
        (dict(tensors=lambda s: s.pop(f"{p}.qzeros")), methods.CheckpointError, r"missing tensor\(s\) \['qzeros'\]"),
        (dict(config={"group_size": 16}), methods.CheckpointError, r"qzeros: checkpoint shape .*bits/group_size"),
        (dict(config={"bits": 8}), methods.CheckpointError, r"qweight: checkpoint shape .*check bits"),
        (dict(config={"bits": 2}), ValueError, r"bits=2 is not supported; use one of \[4, 8\]"),
        (dict(tensors=lambda s: s[f"{p}.g_idx"].fill_(7)), methods.CheckpointError, r"g_idx values must lie in \[0, 2\)"),
        (dict(tensors=lambda s: s.__setitem__(f"{p}.qweight", s[f"{p}.qweight"].float())), methods.CheckpointError,
         r"qweight: checkpoint dtype torch.float32, expected torch.int32"),
    ]
    for i, (edit, error, match) in enumerate(cases):
        with pytest.raises(error, match=match):
            load_model(ModelConf(name_or_path=broken_copy(saved_checkpoint, tmp_path / str(i), **edit)), CPU)
