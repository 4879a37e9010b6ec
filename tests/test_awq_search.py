"""AWQ's searches: folding scales keeps the full-precision model's outputs; AWQ beats RTN with outlier channels."""

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP

from methods.awq.blocks import awq_blocks
from methods.awq.scaling import apply_scale, scale_groups
from methods.awq.search import (SearchOptions, apply_clip, awq_spec, fake_quantize, sample_tokens, search_clip,
                                search_scale)
from methods.gptq.quantizer import rtn


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(kv_heads=4, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    for name, p in model.named_parameters():  # norms away from 1, so a wrong fold would show
        if name.endswith("norm.weight"):
            p.data = torch.rand_like(p) + 0.5
    return model


def block_linears(block):
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


@pytest.mark.parametrize("kv_heads", [4, 2])  # MHA folds o_proj's scale into v_proj; GQA cannot
def test_folding_scales_keeps_the_unquantized_outputs(kv_heads):
    model = tiny_llama(kv_heads)
    ids = torch.randint(0, 128, (2, 24))
    with torch.no_grad():
        ref = model(ids).logits
    gen = torch.Generator().manual_seed(1)
    folded = []
    for block in model.model.layers:
        for g in scale_groups(block, block_linears(block)):
            k = block.get_submodule(g.layers[0]).in_features
            apply_scale(block, g, torch.rand(k, generator=gen) * 4 + 0.25)  # s in [0.25, 4.25)
            folded.append(g.prev)
    assert folded.count("self_attn.v_proj") == (2 if kv_heads == 4 else 0)
    assert {"input_layernorm", "post_attention_layernorm", "mlp.up_proj"} <= set(folded)
    with torch.no_grad():
        out = model(ids).logits
    assert not torch.equal(model.model.layers[0].input_layernorm.weight, tiny_llama(kv_heads).model.layers[0]
                           .input_layernorm.weight)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_search_and_fold_without_quantizing_keep_the_outputs():
    model = tiny_llama()
    ids = torch.randint(0, 128, (2, 24))
    with torch.no_grad():
        ref = model(ids).logits
    calib = [torch.randint(0, 128, (1, 32), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    installed = []
    ratios = awq_blocks(model, awq_spec(32), SearchOptions(n_grid=5, clip=False), calib, lambda n: False,
                        lambda name, linear: installed.append(name), progress=False)
    assert len(installed) == 14 and len(ratios) == 8  # 7 linears, 4 groups per block
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-4, atol=1e-5)


def outlier_inputs(tokens, k, seed=0, outliers=(3, 17, 40, 101), gain=30.0):
    """Activations with a few large channels, as LLM hidden states have."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=gen)
    x[:, list(outliers)] *= gain
    return x


def mse(a, b):
    return (a - b).pow(2).mean().item()


def test_awq_beats_rtn_on_a_layer_with_outlier_channels():
    torch.manual_seed(0)
    layer = nn.Linear(256, 128, bias=False)
    x = outlier_inputs(512, 256)
    spec, opts = awq_spec(128), SearchOptions()
    ref = layer(x).detach()
    w0 = layer.weight.data.clone()
    rtn_err = mse(x @ rtn(w0, spec).dequantize().t(), ref)

    res = search_scale([layer], lambda: [layer(x)], [x], spec, opts)
    assert torch.equal(layer.weight.data, w0)  # restored
    assert res.ratio > 0 and res.rtn_loss == pytest.approx(rtn_err, rel=1e-4)
    s = res.scales
    scaled_err = mse((x / s) @ fake_quantize(w0 * s, spec).t(), ref)
    assert scaled_err == pytest.approx(res.loss, rel=1e-4)
    assert scaled_err < 0.7 * rtn_err, (scaled_err, rtn_err)

    layer.weight.data = w0 * s  # then clip on the scaled inputs, and quantize as the method does
    xs = x / s
    apply_clip(layer, search_clip(layer.weight.data, sample_tokens([xs], 512), spec, opts), spec)
    awq_err = mse(xs @ rtn(layer.weight.data, spec).dequantize().t(), ref)
    assert awq_err <= scaled_err * 1.01, (awq_err, scaled_err)


def test_awq_beats_rtn_on_an_mlp_with_outlier_channels():
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256)
    mlp = LlamaMLP(cfg).eval()
    xs = [outlier_inputs(128, 128, seed=i, outliers=(5, 60, 99)).unsqueeze(0) for i in range(3)]
    spec = awq_spec(64)
    res = search_scale([mlp.gate_proj, mlp.up_proj], lambda: [mlp(x) for x in xs], xs, spec, SearchOptions())
    assert res.loss < 0.8 * res.rtn_loss, (res.loss, res.rtn_loss)


def test_clip_search_never_loses_on_its_tokens_and_handles_a_short_group():
    torch.manual_seed(0)
    w = torch.randn(16, 96)
    w[:, 7] *= 8  # an outlier weight the clip should cut
    x = torch.randn(300, 96)
    spec = awq_spec(64)  # groups of 64 and 32
    bound = search_clip(w, x, spec, SearchOptions())
    assert bound.shape == (16, 2)
    full = torch.stack([w[:, :64].abs().amax(1), w[:, 64:].abs().amax(1)], 1)
    assert (bound <= full).all() and (bound >= 0.5 * full - 1e-6).all() and (bound[:, 0] < full[:, 0]).any()
    layer = nn.Linear(96, 16, bias=False)
    layer.weight.data = w.clone()
    apply_clip(layer, bound, spec)
    assert mse(x @ fake_quantize(layer.weight.data, spec).t(), x @ w.t()) <= mse(x @ fake_quantize(w, spec).t(),
                                                                                   x @ w.t())
