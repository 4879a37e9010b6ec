"""AWQ end to end on a tiny Llama: quantize, export in the AutoAWQ GEMM layout, load back bit-exactly; bad
checkpoints and configs fail naming the problem and the fix."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from harness.models import load_quantized_checkpoint
from methods import CheckpointError, QuantizationConfig, QuantLinear
from methods.awq import AWQConfig
from methods.export import save_checkpoint

CHECKPOINT_CONFIG = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm",
                     "modules_to_not_convert": None}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)  # like the default model: GQA, tied head
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def quantized():
    model = tiny_llama()
    cfg = AWQConfig.from_dict({"group_size": 32, "n_grid": 10, "clip_grid": 10})
    assert cfg.needs_calibration()
    calib = [torch.randint(0, 128, (1, 32), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    swapped = cfg.prepare_model(model, calib, progress=False)
    assert len(swapped) == 14 and "lm_head" not in swapped
    return model, cfg


@pytest.fixture(scope="module")
def exported(quantized, tmp_path_factory):
    model, cfg = quantized
    return save_checkpoint(model, cfg, tmp_path_factory.mktemp("awq") / "ckpt")


def load(path):
    qc = QuantizationConfig.from_config(AutoConfig.from_pretrained(path))
    return load_quantized_checkpoint(str(path), qc, torch.float32, torch.device("cpu")), qc


def test_quantized_model_stays_close_to_full_precision(quantized):
    model, _ = quantized
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        out, ref = model(ids).logits, tiny_llama()(ids).logits
    assert ((out - ref).norm() / ref.norm()).item() < 0.1


def test_export_writes_the_autoawq_gemm_layout(exported):
    hf = json.loads((exported / "config.json").read_text())
    assert hf["quantization_config"] == CHECKPOINT_CONFIG
    state = load_file(str(exported / "model.safetensors"))
    up, down = "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"
    assert state[f"{up}.qweight"].shape == (64, 160 // 8) and state[f"{up}.qweight"].dtype == torch.int32
    assert state[f"{up}.qzeros"].shape == (64 // 32, 160 // 8) and state[f"{up}.qzeros"].dtype == torch.int32
    assert state[f"{up}.scales"].shape == (2, 160) and state[f"{up}.scales"].dtype == torch.float16
    assert state[f"{down}.qweight"].shape == (160, 64 // 8)
    assert f"{up}.weight" not in state and f"{up}.g_idx" not in state and "lm_head.weight" not in state
    assert state["model.layers.0.input_layernorm.weight"].dtype == torch.float32  # carries the folded scales


def test_export_then_load_is_bit_exact(quantized, exported):
    model, cfg = quantized
    loaded, qc = load(exported)
    assert isinstance(qc, AWQConfig) and qc.from_checkpoint and not qc.needs_calibration()
    assert qc.checkpoint_config() == cfg.checkpoint_config()
    for name, layer in model.named_modules():
        if isinstance(layer, QuantLinear):
            other = loaded.get_submodule(name)
            for key in ("qweight", "qzeros", "scales", "zeros"):
                assert torch.equal(getattr(layer, key), getattr(other, key)), (name, key)
            mine, theirs = layer.method.checkpoint_tensors(layer), other.method.checkpoint_tensors(other)
            assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def rewrite(src, dst, edit_state=None, edit_config=None):
    dst.mkdir()
    state = load_file(str(src / "model.safetensors"))
    if edit_state:
        edit_state(state)
    save_file(state, str(dst / "model.safetensors"))
    hf = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(hf["quantization_config"])
    (dst / "config.json").write_text(json.dumps(hf))
    return dst


def test_missing_tensor_is_named(exported, tmp_path):
    bad = rewrite(exported, tmp_path / "bad", lambda s: s.pop("model.layers.1.self_attn.k_proj.qzeros"))
    with pytest.raises(CheckpointError, match=r"model.layers.1.self_attn.k_proj: checkpoint is missing tensor\(s\) "
                                              r"\['qzeros'\]"):
        load(bad)


def test_wrong_shape_is_named(exported, tmp_path):
    def cut(s):
        s["model.layers.0.mlp.up_proj.qweight"] = s["model.layers.0.mlp.up_proj.qweight"][:, :-1].contiguous()
    with pytest.raises(CheckpointError, match=r"up_proj.qweight: checkpoint shape \(64, 19\) != expected \(64, 20\)"
                                              r".*group_size"):
        load(rewrite(exported, tmp_path / "bad", cut))


def test_group_size_that_does_not_match_the_tensors(exported, tmp_path):
    bad = rewrite(exported, tmp_path / "bad", edit_config=lambda q: q.update(group_size=64))
    with pytest.raises(CheckpointError, match=r"qzeros: checkpoint shape \(2, .*\) != expected \(1, .*group_size"):
        load(bad)


@pytest.mark.parametrize("change,message", [
    ({"version": "gemv"}, r"version='gemv' is not supported; supported: \['gemm'\]"),
    ({"version": "marlin"}, r"version='marlin' is not supported; supported: \['gemm'\]"),
    ({"bits": 8}, r"bits=8 is not supported; the AutoAWQ GEMM layout is 4-bit \(bits=4\)"),
    ({"zero_point": False}, r"zero_point=false .* use zero_point=true"),
    ({"group_size": 0}, r"group_size=0 must be positive"),
    ({"backend": "llm-awq"}, r"llm-awq.*not supported"),
])
def test_unsupported_configs_say_what_is_supported(change, message):
    with pytest.raises(ValueError, match=message):
        QuantizationConfig.from_config({"quantization_config": CHECKPOINT_CONFIG | change})


def test_hf_and_autoawq_config_spellings():
    hf = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "GEMM",
          "backend": "autoawq", "do_fuse": False, "fuse_max_seq_len": None, "modules_to_fuse": None,
          "exllama_config": None, "modules_to_not_convert": ["visual"]}
    q = QuantizationConfig.from_config(hf)
    assert isinstance(q, AWQConfig) and q.version == "gemm" and q.backend == "auto"
    assert q.is_skipped("model.visual.blocks.0.attn.qkv") and q.is_skipped("lm_head")  # AutoAWQ's substring match
    assert not q.is_skipped("model.layers.0.mlp.up_proj")
    assert q.checkpoint_config()["modules_to_not_convert"] == ["visual"]
    autoawq = QuantizationConfig.from_config({"quant_method": "awq", "w_bit": 4, "q_group_size": 64,
                                              "zero_point": True, "version": "gemm"})
    assert autoawq.group_size == 64 and autoawq.bits == 4


def test_prepare_model_without_calibration_says_how_to_get_it():
    with pytest.raises(ValueError, match="calibration_samples"):
        AWQConfig().prepare_model(tiny_llama(), None, progress=False)


def test_harness_builds_the_method_with_its_calibration_options():
    from harness.runner import build_method

    cfg = build_method({"quant_method": "awq", "group_size": 64, "calibration_samples": 4,
                        "calibration_seq_len": 256})
    assert isinstance(cfg, AWQConfig) and cfg.needs_calibration() and cfg.group_size == 64
    assert (cfg.calibration_samples, cfg.calibration_seq_len) == (4, 256)
