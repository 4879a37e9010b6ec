"""from_config dispatch, the registry, and the loader's checks."""

import dataclasses

import pytest
import torch
from torch import nn
from transformers import LlamaConfig

import methods
from methods import QuantizationConfig, UnknownMethodError
from methods.fp8 import FP8Config
from methods.none import NoQuantConfig


def test_dispatch_on_quant_method_in_hf_config_object():
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
    cfg.quantization_config = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [64, 64]}
    q = QuantizationConfig.from_config(cfg)
    assert isinstance(q, FP8Config) and q.from_checkpoint
    assert q.weight_granularity == "block" and q.weight_block_size == [64, 64]


def test_dispatch_on_config_dict_and_bare_quantization_config():
    assert isinstance(QuantizationConfig.from_config({"quantization_config": {"quant_method": "FP8"}}), FP8Config)
    assert isinstance(QuantizationConfig.from_config({"quant_method": "fp8"}), FP8Config)


def test_no_quantization_config_means_baseline():
    q = QuantizationConfig.from_config(LlamaConfig())
    assert isinstance(q, NoQuantConfig)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UnknownMethodError) as e:
        QuantizationConfig.from_config({"quant_method": "bogus"})
    msg = str(e.value)
    assert "'bogus'" in msg
    for name in methods.known_methods():
        assert name in msg
    with pytest.raises(UnknownMethodError, match="no 'quant_method'"):
        QuantizationConfig.from_config({"quantization_config": {"bits": 4}})


def test_bad_option_names_allowed_values():
    with pytest.raises(ValueError, match="activation_scheme='sometimes'.*dynamic"):
        FP8Config.from_dict({"activation_scheme": "sometimes"})


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        @methods.register_method("fp8")
        @dataclasses.dataclass
        class Other(QuantizationConfig):
            def get_linear_method(self):
                raise NotImplementedError


def test_skip_list_matches_qualified_and_leaf_names():
    q = NoQuantConfig(modules_to_not_convert=["lm_head", "model.layers.0.*"])
    assert q.is_skipped("lm_head") and q.is_skipped("model.layers.0.mlp.up_proj")
    assert not q.is_skipped("model.layers.1.mlp.up_proj")


def test_online_swap_keeps_outputs_for_baseline_and_skips_lm_head():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(16, 8))
    model.add_module("lm_head", nn.Linear(8, 4, bias=False))
    x = torch.randn(3, 16)
    ref = model(x)
    swapped = NoQuantConfig().prepare_model(model, progress=False)
    assert swapped == ["proj"]
    assert isinstance(model.proj, methods.QuantLinear) and isinstance(model.lm_head, nn.Linear)
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


def test_loader_names_missing_and_misshapen_tensors():
    layer = methods.QuantLinear(16, 8, bias=False, method=NoQuantConfig().get_linear_method(),
                                params_dtype=torch.float32)
    with pytest.raises(methods.CheckpointError, match=r"proj: checkpoint is missing tensor\(s\) \['weight'\]"):
        methods.loader.load_layer_tensors(layer, {}, "proj")
    with pytest.raises(methods.CheckpointError, match=r"proj.weight: checkpoint shape \(8, 15\) != expected \(8, 16\)"):
        methods.loader.load_layer_tensors(layer, {"weight": torch.zeros(8, 15)}, "proj")


@pytest.mark.parametrize("fast", [True, False])
def test_fp8_layers_pass_fast_accum_and_backend_to_the_kernel(monkeypatch, fast):
    # method.fast_accum (default on, as vLLM's FP8 kernels run) and method.backend reach fp8_linear
    from kernels import fp8 as fp8k

    seen = {}
    real = fp8k.fp8_linear

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **{**kw, "backend": "torch"})

    monkeypatch.setattr(fp8k, "fp8_linear", spy)
    model = nn.Sequential(nn.Linear(32, 16))
    cfg = FP8Config.from_dict({"fast_accum": fast, "backend": "gemv"})
    assert FP8Config.from_dict({}).fast_accum
    cfg.prepare_model(model, None, progress=False)
    y = model(torch.randn(3, 32))
    assert y.shape == (3, 16) and seen["fast_accum"] is fast and seen["backend"] == "gemv"
