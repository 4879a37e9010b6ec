"""Fused q/k/v and gate/up projections (methods/fusion.py) compute what the separate layers computed, for every
method's layout, keep each tensor once, refuse what cannot fuse, and run under the decoder (eager and compiled)."""

import pytest
import torch
from torch import nn
from transformers import LlamaConfig

import methods
from harness.metrics.decode import StaticDecoder
from harness.models import describe, random_model
from methods.base import FusionError, QuantLinear
from methods.fusion import FusedGLUMLP, FusedPart, fuse_glu, fuse_layers, fuse_projections
from kernels.w4a16 import zero_codes
from methods.gptq.linear import zeros_of

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
# q 256 rows, k/v 128 each (GQA: narrower than q), gate/up 512: whole 128-row FP8 blocks, 4-bit groups of 32
CONFIG = dict(vocab_size=96, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2)
METHODS = {
    "none": {},
    "rtn": {"group_size": 32},
    "gptq_act_order": {"group_size": 32, "desc_act": True},  # calibrated: q/k/v share one g_idx
    "awq": {"group_size": 32},
    "fp8": {},
    "fp8_channel_token": {"weight_granularity": "channel", "activation_granularity": "token"},
    "fp8_block": {"weight_granularity": "block"},
}


def _quantized(name: str, **config) -> nn.Module:
    torch.manual_seed(0)
    model = random_model(LlamaConfig(**CONFIG | config), torch.float32, CPU).eval()
    method = methods.get_method_class(name.split("_")[0]).from_dict(METHODS.get(name, {}))
    if method.needs_calibration():
        gen = torch.Generator().manual_seed(3)
        method.prepare_model(model, [torch.randint(0, CONFIG["vocab_size"], (1, 32), generator=gen)], progress=False)
        if name == "gptq_act_order":  # act-order really reordered: the fused layer carries a g_idx to the kernel
            assert model.model.layers[0].self_attn.q_proj.method.act_order
    else:
        method.prepare_speed_only(model, progress=False)
    return model


def _shared_bytes(model) -> int:
    """Bytes of the tensors that fusing keeps once instead of per part (not concatenated: fuse_dims)."""
    total = 0
    for layer in model.model.layers:
        for parent, names in ((layer.self_attn, ("k_proj", "v_proj")), (layer.mlp, ("up_proj",))):
            for n in names:
                part = getattr(parent, n)
                dims = {"bias": 0} | (part.method.fuse_dims or {})
                total += sum(t.numel() * t.element_size() for k, t in part.named_parameters() if k not in dims)
    return total


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("name", list(METHODS))
def test_fused_model_computes_what_the_separate_layers_computed(name):
    model = _quantized(name)
    ids = torch.randint(0, CONFIG["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
    before, bytes_before = _logits(model, ids), describe(model)["weight_bytes"]
    shared = _shared_bytes(model)
    fused = fuse_projections(model)
    assert fused == [f"model.layers.{i}.{g}" for i in range(2)
                     for g in ("self_attn.q_proj+k_proj+v_proj", "mlp.gate_proj+up_proj")]
    attn = model.model.layers[0].self_attn
    assert all(isinstance(getattr(attn, n), FusedPart) for n in ("q_proj", "k_proj", "v_proj"))
    qkv = attn.q_proj.group.fused
    assert qkv.out_features == 256 + 2 * 128 and qkv.in_features == 256
    # the 4-bit methods apply silu(gate) * up in their gate_up layer (columns interleaved); the others
    # concatenate gate and up as any siblings
    mlp = model.model.layers[0].mlp
    glu = name in ("rtn", "gptq_act_order", "awq")
    assert isinstance(mlp, FusedGLUMLP) == glu
    if glu:
        assert mlp.gate_up.out_features == 2 * 512 and not hasattr(mlp, "gate_proj")
    else:
        assert isinstance(mlp.gate_proj, FusedPart)
    # every tensor once: the fused layer's tensors replace the parts', and a shared one (g_idx) is kept once;
    # per-tensor FP8 scales become one float32 per output row (qkv: 512 rows for 3 scales, gate_up: 1024 for 2)
    grown = 2 * 4 * ((512 - 3) + (1024 - 2)) if name == "fp8" else 0
    # a GLU-fused gate_up layer drops the parts' packed qzeros (read by export only; they cannot interleave)
    dropped = 2 * 2 * (256 // 32) * (512 // 8) * 4 if name in ("rtn", "gptq_act_order", "awq") else 0
    assert describe(model)["weight_bytes"] == bytes_before - shared + grown - dropped
    after = _logits(model, ids)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_per_tensor_fp8_scales_become_per_channel_without_requantizing():
    model = _quantized("fp8")
    attn = model.model.layers[0].self_attn
    parts = [attn.q_proj, attn.k_proj, attn.v_proj]
    scales = [p.weight_scale.item() for p in parts]
    weights = torch.cat([p.weight.view(torch.uint8) for p in parts])
    assert len(set(scales)) == 3  # three tensors, three scales
    fuse_projections(model)
    qkv = attn.q_proj.group.fused
    expected = torch.tensor(scales).repeat_interleave(torch.tensor([256, 128, 128]))
    assert torch.equal(qkv.weight_scale.squeeze(1), expected)
    assert torch.equal(qkv.weight.view(torch.uint8), weights)  # the same fp8 codes


def test_layers_that_cannot_fuse_are_refused_or_left_alone():
    # 96-row k/v are not whole 128-row FP8 blocks: the attention group stays separate, the MLP group fuses
    model = _quantized("fp8_block", hidden_size=256, num_attention_heads=8, num_key_value_heads=3,
                       intermediate_size=384)
    attn = model.model.layers[0].self_attn
    with pytest.raises(FusionError, match="whole 128-row blocks"):
        fuse_layers([attn.q_proj, attn.k_proj, attn.v_proj])
    assert fuse_projections(model) == ["model.layers.0.mlp.gate_proj+up_proj", "model.layers.1.mlp.gate_proj+up_proj"]
    assert isinstance(attn.k_proj, QuantLinear)
    # layers of different methods, or of different input sizes, do not fuse
    lin = nn.Linear(256, 8)
    with pytest.raises(FusionError, match="one method"):
        fuse_layers([attn.q_proj, lin])
    with pytest.raises(FusionError, match="in_features"):
        fuse_layers([nn.Linear(4, 8), nn.Linear(5, 8)])


@pytest.mark.parametrize("bias", [False, True])
def test_gate_up_columns_interleave_and_only_silu_gated_mlps_fuse_their_activation(bias):
    model = _quantized("rtn", mlp_bias=bias)
    mlp = model.model.layers[1].mlp
    gate, up = mlp.gate_proj, mlp.up_proj
    fused = fuse_glu(mlp).gate_up
    # column 2j is gate's column j, 2j + 1 up's: the 4-bit codes pack along K, so columns move whole
    for name in ("qweight", "scales"):
        assert torch.equal(getattr(fused, name)[:, 0::2], getattr(gate, name))
        assert torch.equal(getattr(fused, name)[:, 1::2], getattr(up, name))
    assert zeros_of(gate) is None and zeros_of(up) is None and zeros_of(fused) is None  # symmetric RTN: no zeros
    assert not hasattr(fused, "qzeros")
    if bias:
        assert torch.equal(fused.bias[0::2], gate.bias) and torch.equal(fused.bias[1::2], up.bias)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(fused.method.apply_glu(fused, x), mlp.act_fn(gate(x)) * up(x), rtol=1e-6, atol=1e-6)
    original = type(mlp)

    class LlamaMLP(original):  # a class of that name (remote code, say) computing something else
        def forward(self, x):
            return self.down_proj(self.up_proj(x))

    mlp.__class__ = LlamaMLP
    with pytest.raises(FusionError, match="SiLU-gated"):
        fuse_glu(mlp)
    mlp.__class__ = original
    mlp.act_fn = nn.GELU()  # another activation: the pair fuses as plain siblings
    with pytest.raises(FusionError, match="SiLU-gated"):
        fuse_glu(mlp)
    model.model.layers[0].mlp.act_fn = nn.GELU()
    fuse_projections(model)
    assert isinstance(model.model.layers[0].mlp.gate_proj, FusedPart)


def test_a_part_called_with_another_input_is_an_error():
    a, b = nn.Linear(8, 4), nn.Linear(8, 6)
    model = nn.Module()
    model.gate_proj, model.up_proj = a, b
    fuse_projections(model)
    x = torch.randn(3, 8)
    torch.testing.assert_close(model.gate_proj(x), a(x))
    with pytest.raises(RuntimeError, match="another input"):
        model.up_proj(torch.randn(3, 8))
    # once every part has run, the group holds no activations
    model.gate_proj(x)
    model.up_proj(x)
    assert model.gate_proj.group._outputs is None and model.gate_proj.group._input is None


def test_fused_decode_equals_separate_decode_eager_and_compiled():
    model = _quantized("rtn")
    prompt = torch.randint(0, CONFIG["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(2))
    ref = StaticDecoder(model, 2, 6, 4).generate(prompt)
    fuse_projections(model)
    dec = StaticDecoder(model, 2, 6, 4)
    assert torch.equal(dec.generate(prompt), ref)
    dec.compile(prompt)  # one graph, no breaks: the parts' hand-over of slices compiles
    assert dec.compile_stats == {"graphs": 1, "graph_breaks": 0}
    assert torch.equal(dec.generate(prompt), ref)


@pytest.mark.parametrize("glu", [False, True])
def test_symmetric_parts_fuse_with_asymmetric_ones(glu):
    # a symmetric part holds no zeros (the kernel uses 2^(bits-1)); joined with an asymmetric part it gets that
    # constant as codes, so the fused layer computes both parts' outputs
    model = _quantized("rtn")
    mlp = model.model.layers[0].mlp
    gate, up = mlp.gate_proj, mlp.up_proj
    z = torch.randint(0, 16, up.scales.shape, generator=torch.Generator().manual_seed(5))
    z[0, 0] = 3  # surely asymmetric
    up.register("zeros", zero_codes(z, 4))
    assert zeros_of(gate) is None and zeros_of(up).dtype == torch.uint8
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(6))
    g, u = gate(x), up(x)
    if glu:
        fused = fuse_glu(mlp).gate_up
        assert torch.equal(zeros_of(fused)[:, 0::2], torch.full_like(z, 8, dtype=torch.uint8))
        assert torch.equal(zeros_of(fused)[:, 1::2], z.to(torch.uint8))
        torch.testing.assert_close(fused.method.apply_glu(fused, x), mlp.act_fn(g) * u, rtol=1e-6, atol=1e-6)
    else:
        fused = fuse_layers([gate, up])
        torch.testing.assert_close(fused(x), torch.cat([g, u], -1), rtol=0, atol=0)
