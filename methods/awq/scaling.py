"""Which linear layers of a decoder block share an input, and folding AWQ's per-channel scales into the block.

Scaling the input channels of a group of layers by s (W -> W * s) is exact when whatever produces their common
input divides its output channels by s: a norm's weight (and bias), or the output rows of a previous linear layer
whose output reaches the group channel by channel (v_proj -> attention -> o_proj; up_proj -> act(gate) * up ->
down_proj). The full-precision block computes the same function afterwards, up to float rounding.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class ScaleGroup:
    prev: str  # module producing the layers' input: a norm, or a linear layer
    layers: tuple[str, ...]  # linear layers reading prev's output (block-relative names)
    inspect: str | None  # module whose output the scale search compares; None: the single layer itself


# Llama / Mistral / Qwen2-style blocks (AutoAWQ's get_layers_for_scaling for those models).
LLAMA_GROUPS = (
    ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
    ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), None),
    ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ScaleGroup("mlp.up_proj", ("mlp.down_proj",), None),
)


def _module(block: nn.Module, name: str) -> nn.Module | None:
    try:
        return block.get_submodule(name)
    except AttributeError:
        return None


def _foldable_norm(module: nn.Module, channels: int) -> bool:
    """A norm whose output is `weight * normalised(x)` (Gemma's `(1 + weight)` is not)."""
    weight = getattr(module, "weight", None)
    name = type(module).__name__
    return (isinstance(weight, torch.Tensor) and tuple(weight.shape) == (channels,)
            and name.endswith(("RMSNorm", "LayerNorm")) and "Gemma" not in name)


def scale_groups(block: nn.Module, linears: Mapping[str, nn.Linear]) -> list[ScaleGroup]:
    """The LLAMA_GROUPS this block has, among the layers in `linears` (the ones being quantized).

    A group is left out (its layers are then only clipped and rounded) when a module is missing, a layer is not
    being quantized, or the scale cannot be folded exactly (GQA's v_proj -> o_proj, an unknown norm)."""
    groups, left_out = [], []
    for g in LLAMA_GROUPS:
        prev = _module(block, g.prev)
        layers = [linears.get(n) for n in g.layers]
        if prev is None or any(layer is None for layer in layers):
            continue
        k = layers[0].in_features
        ok = all(layer.in_features == k for layer in layers) and (
            prev.out_features == k if isinstance(prev, nn.Linear) else _foldable_norm(prev, k))
        (groups if ok else left_out).append(g)
    if any(g.prev.endswith("layernorm") for g in left_out):
        warnings.warn(f"awq: cannot fold scales into {[g.prev for g in left_out]} ({type(block).__name__}); "
                      f"those layers get clipping and RTN only")
    return groups


@torch.no_grad()
def apply_scale(block: nn.Module, group: ScaleGroup, scales: torch.Tensor) -> None:
    """W -> W * s for the group's layers, and prev's output channels / s (computed in fp32)."""
    s = scales.float()
    prev = block.get_submodule(group.prev)
    if isinstance(prev, nn.Linear):
        prev.weight.data = (prev.weight.float() / s[:, None]).to(prev.weight.dtype)
    else:
        prev.weight.data = (prev.weight.float() / s).to(prev.weight.dtype)
    if getattr(prev, "bias", None) is not None:
        prev.bias.data = (prev.bias.float() / s).to(prev.bias.dtype)
    for name in group.layers:
        layer = block.get_submodule(name)
        layer.weight.data = (layer.weight.float() * s[None, :]).to(layer.weight.dtype)
