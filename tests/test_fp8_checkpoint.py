"""FP8 checkpoints: our HF-layout export loads back bit-exactly; compressed-tensors FP8; bad checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from harness.models import load_quantized_checkpoint
from methods import CheckpointError, QuantizationConfig, QuantLinear
from methods.export import save_checkpoint
from methods.fp8 import FP8Config

SCHEMES = {
    "tensor": {},
    "channel_token": {"weight_granularity": "channel", "activation_granularity": "token"},
    "block": {"weight_block_size": [64, 32]},
    "static": {"activation_scheme": "static"},
}


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)  # like the default model
    return LlamaForCausalLM(cfg).eval()


def quantized(options):
    model = tiny_llama()
    cfg = FP8Config.from_dict(options)
    calib = [torch.randint(0, 128, (1, 32)) for _ in range(4)] if cfg.needs_calibration() else None
    cfg.prepare_model(model, calib, progress=False)
    return model, cfg


def load(path):
    qc = QuantizationConfig.from_config(AutoConfig.from_pretrained(path))
    return load_quantized_checkpoint(str(path), qc, torch.float32, torch.device("cpu")), qc


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_export_then_load_is_bit_exact(tmp_path, scheme):
    model, cfg = quantized(SCHEMES[scheme])
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        ref = model(ids).logits
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    loaded, qc = load(tmp_path / "ckpt")
    assert qc.to_dict() == cfg.to_dict()
    for name, layer in model.named_modules():
        if isinstance(layer, QuantLinear):
            other = loaded.get_submodule(name)
            for key, t in layer.method.checkpoint_tensors(layer).items():
                assert torch.equal(t.view(torch.uint8) if t.dtype.itemsize == 1 else t,
                                   getattr(other, key).view(torch.uint8) if t.dtype.itemsize == 1 else getattr(other, key))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, ref)


def test_hf_layout_names_and_config(tmp_path):
    model, cfg = quantized(SCHEMES["block"])
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    state = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    qc = json.loads((tmp_path / "ckpt" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "fp8" and qc["weight_block_size"] == [64, 32]
    assert state["model.layers.0.mlp.up_proj.weight"].dtype == torch.float8_e4m3fn
    assert state["model.layers.0.mlp.up_proj.weight_scale_inv"].shape == (3, 2)  # ceil(160/64), 64/32
    assert "lm_head.weight" not in state  # tied to the embeddings, written once


def test_compressed_tensors_float_quantized_checkpoint(tmp_path):
    model, cfg = quantized(SCHEMES["channel_token"])
    ids = torch.randint(0, 128, (1, 16))
    with torch.no_grad():
        ref = model(ids).logits
    ckpt = save_checkpoint(model, cfg, tmp_path / "ckpt")
    hf = json.loads((ckpt / "config.json").read_text())
    hf["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
        "config_groups": {"group_0": {"targets": ["Linear"],
                                      "weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                                                  "dynamic": False, "symmetric": True},
                                      "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                                            "dynamic": True}}}}
    (ckpt / "config.json").write_text(json.dumps(hf))
    loaded, qc = load(ckpt)
    assert isinstance(qc, FP8Config) and qc.weight_granularity == "channel"
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, ref)


def test_unsupported_compressed_tensors_format_is_named():
    with pytest.raises(ValueError, match="format 'pack-quantized' is not supported; supported"):
        QuantizationConfig.from_config({"quant_method": "compressed-tensors", "format": "pack-quantized"})


@pytest.fixture()
def ckpt(tmp_path):
    model, cfg = quantized(SCHEMES["tensor"])
    return save_checkpoint(model, cfg, tmp_path / "ckpt")


def test_missing_scale_is_a_clear_error(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    del state["model.layers.1.self_attn.o_proj.weight_scale"]
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model.layers.1.self_attn.o_proj: checkpoint is missing tensor\(s\) "
                                              r"\['weight_scale'\]"):
        load(ckpt)


def test_wrong_weight_dtype_is_a_clear_error(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    key = "model.layers.0.mlp.down_proj.weight"
    state[key] = state[key].to(torch.bfloat16)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="down_proj.weight: checkpoint dtype torch.bfloat16, expected "
                                              "torch.float8_e4m3fn"):
        load(ckpt)
