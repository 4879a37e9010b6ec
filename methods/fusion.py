"""Fuse sibling projections that read the same input into one GEMM, as serving engines do (vLLM's
QKVParallelLinear and MergedColumnParallelLinear): q/k/v into one qkv layer and gate/up into one gate_up layer.

One GEMM of N = n_q + n_k + n_v reads x once and launches once instead of three times, and the wider N fills
more of the GPU at decode sizes. The fused layer holds its parts' tensors concatenated along the output features,
as each linear method says (`LinearMethodBase.fuse_tensors`): the same weights, so it computes what the parts
computed up to the kernel's rounding, which may differ where the fused tensors take another kernel path (a W4A16
part with fp16 zeros fused with one whose zeros are fp32 dequantizes in fp32; per-tensor FP8 scales become
per-channel ones, run row-wise, whose cuBLASLt GEMM rounds its output through bf16).

The model's own forward keeps calling q_proj, k_proj and v_proj: each becomes a `FusedPart` of one
`FusedProjection`. The first part called with an input runs the fused layer and keeps the other parts' slices
until they are called with that same input tensor, so the model code needs no change, under eager, CUDA graphs
and torch.compile alike. Fused models run and measure; export them before fusing (their state_dict differs).

An MLP of the Llama family (down_proj(silu(gate_proj(x)) * up_proj(x))) whose gate and up layers' method can
apply the activation itself (`LinearMethodBase.glu_tensors`, the 4-bit W4A16 methods) goes one step further: its
gate_up layer holds the two parts' columns interleaved (gate 0, up 0, gate 1, ...) and returns silu(gate) * up
(`apply_glu`), which the decode GEMV computes in its epilogue; the MLP becomes a `FusedGLUMLP`. At batch-1 decode
this drops the separate activation kernel of every layer.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from kernels.w4a16 import interleave_glu
from methods.base import FusionError, QuantLinear

# Sibling projections of one module that share their input, in the order their outputs are concatenated.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
__all__ = ["FusionError", "FusedGLUMLP", "FusedPart", "FusedProjection", "fuse_glu", "fuse_layers",
           "fuse_projections"]
# MLP classes whose forward is down_proj(act_fn(gate_proj(x)) * up_proj(x)); with a SiLU act_fn they fuse the
# activation into the gate_up layer (`fuse_glu`)
GLU_MLPS = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")
SILU = ("SiLU", "SiLUActivation")


class FusedProjection(nn.Module):
    """One layer computing several sibling projections; hands each FusedPart its slice."""

    def __init__(self, fused: nn.Module, sizes: list[int]):
        super().__init__()
        self.fused, self.sizes = fused, list(sizes)
        self._input: torch.Tensor | None = None
        self._outputs: list[torch.Tensor] | None = None
        self._left = 0

    def part(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self._outputs is None:
            self._outputs, self._input, self._left = list(self.fused(x).split(self.sizes, dim=-1)), x, len(self.sizes)
        elif x is not self._input:
            self._outputs = self._input = None  # the next call starts afresh
            raise RuntimeError("fused projection: a part was called with another input than its siblings before "
                               "they all ran; this model's forward does not feed its projections one input (run "
                               "without model.fuse_projections)")
        out = self._outputs[index]
        self._left -= 1
        if self._left == 0:  # every part has its slice: hold no activations between calls
            self._outputs = self._input = None
        return out


class FusedPart(nn.Module):
    """Stands in for one projection (e.g. k_proj): its slice of the FusedProjection's output."""

    def __init__(self, group: FusedProjection, index: int, in_features: int, out_features: int):
        super().__init__()
        object.__setattr__(self, "group", group)  # not a child: the group's tensors belong to the first part only
        self.index, self.in_features, self.out_features = index, in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.part(self.index, x)

    def extra_repr(self) -> str:
        return f"part {self.index} of {self.group.sizes}"


def fuse_layers(layers: list[nn.Module]) -> nn.Module:
    """One layer computing torch.cat([layer(x) for layer in layers], -1): nn.Linear or QuantLinear parts."""
    first = layers[0]
    if len({layer.in_features for layer in layers}) != 1:
        raise FusionError(f"cannot fuse layers of in_features {[layer.in_features for layer in layers]}")
    n = sum(layer.out_features for layer in layers)
    if all(type(layer) is nn.Linear for layer in layers):
        if len({layer.bias is None for layer in layers}) != 1:
            raise FusionError("cannot fuse nn.Linear layers with and without bias")
        fused = nn.Linear(first.in_features, n, bias=first.bias is not None, device="meta")
        fused.weight = nn.Parameter(torch.cat([layer.weight.data for layer in layers]), requires_grad=False)
        if first.bias is not None:
            fused.bias = nn.Parameter(torch.cat([layer.bias.data for layer in layers]), requires_grad=False)
        return fused
    if not all(isinstance(layer, QuantLinear) for layer in layers) or \
            len({type(layer.method) for layer in layers}) != 1 or len({layer.has_bias for layer in layers}) != 1:
        raise FusionError(f"cannot fuse {[type(getattr(layer, 'method', layer)).__name__ for layer in layers]}: "
                          "the parts must be layers of one method, all with or all without bias")
    tensors = first.method.fuse_tensors(layers, first.method.fusion_parts(layers))
    # a copy of the first part's method: its state (e.g. GPTQ's act_order) is per layer and equal in the parts
    return QuantLinear.assemble(first.in_features, n, copy.copy(first.method), tensors, first.params_dtype)


class FusedGLUMLP(nn.Module):
    """A gated MLP whose gate_up layer applies silu(gate) * up itself (`LinearMethodBase.apply_glu`)."""

    def __init__(self, gate_up: QuantLinear, down_proj: nn.Module):
        super().__init__()
        self.gate_up, self.down_proj = gate_up, down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.gate_up.method.apply_glu(self.gate_up, x))


@functools.cache
def _glu_forwards() -> frozenset:
    """The forward functions of transformers' GLU_MLPS classes (a same-named class elsewhere, e.g. remote code,
    may compute something else)."""
    import importlib

    forwards = set()
    for name in GLU_MLPS:
        module = name[:-3].lower()  # LlamaMLP -> llama
        try:
            forwards.add(getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"),
                                 name).forward)
        except (ImportError, AttributeError):
            continue
    return frozenset(forwards)


def _glu_fusable(mlp: nn.Module) -> bool:
    gate, up = getattr(mlp, "gate_proj", None), getattr(mlp, "up_proj", None)
    return (type(mlp).__name__ in GLU_MLPS and type(getattr(mlp, "act_fn", None)).__name__ in SILU
            and type(mlp).forward in _glu_forwards()
            and isinstance(gate, QuantLinear) and isinstance(up, QuantLinear) and type(gate.method) is type(up.method)
            and bool(gate.method.glu_tensors) and gate.out_features == up.out_features
            and gate.in_features == up.in_features and gate.has_bias == up.has_bias)


def fuse_glu(mlp: nn.Module) -> FusedGLUMLP:
    """The FusedGLUMLP computing `mlp` (a GLU_MLPS module with a SiLU act_fn and gate/up layers of one method
    with glu_tensors): the pair's tensors joined by the method (`fuse_tensors`), then the glu_tensors and the
    bias rebuilt with the parts' columns interleaved. Other per-column tensors (a 4-bit checkpoint's packed
    qzeros, for export only) cannot interleave and are dropped: like every fused model, export before fusing."""
    if not _glu_fusable(mlp):
        raise FusionError(f"{type(mlp).__name__}: not a SiLU-gated MLP whose gate and up layers apply the "
                          f"activation in their kernel")
    gate, up = mlp.gate_proj, mlp.up_proj
    parts = gate.method.fusion_parts([gate, up])
    tensors = gate.method.fuse_tensors([gate, up], parts)
    dims = {"bias": 0} | (gate.method.fuse_dims or {})
    for name in list(tensors):
        if name in gate.method.glu_tensors or name == "bias":
            tensors[name] = interleave_glu(parts[0][name], parts[1][name], dim=dims[name])
        elif name in dims:
            del tensors[name]
    fused = QuantLinear.assemble(gate.in_features, 2 * gate.out_features, copy.copy(gate.method), tensors,
                                 gate.params_dtype)
    return FusedGLUMLP(fused, mlp.down_proj)


def fuse_projections(model: nn.Module) -> list[str]:
    """Fuse every SIBLINGS group found in `model` in place, a SiLU-gated MLP's gate/up pair with its activation
    where the method can (`fuse_glu`); returns the fused groups' names (e.g.
    'model.layers.0.self_attn.q_proj+k_proj+v_proj'). Groups whose layers cannot fuse are left as they are."""
    fused = []
    for parent_name, parent in list(model.named_modules()):
        if _glu_fusable(parent):
            try:
                glu = fuse_glu(parent)
            except FusionError:
                glu = None  # e.g. gate and up with different act-order g_idx: fuse as plain siblings, or not
            if glu is not None:
                owner, _, attr = parent_name.rpartition(".")
                setattr(model.get_submodule(owner) if owner else model, attr, glu)
                fused.append(f"{parent_name}.gate_proj+up_proj")
                continue
        for names in SIBLINGS:
            layers = [getattr(parent, n, None) for n in names]
            if any(not isinstance(layer, (nn.Linear, QuantLinear)) for layer in layers):
                continue
            try:
                group = FusedProjection(fuse_layers(layers), [layer.out_features for layer in layers])
            except FusionError:
                continue
            for i, (name, layer) in enumerate(zip(names, layers)):
                part = FusedPart(group, i, layer.in_features, layer.out_features)
                if i == 0:
                    part.fused_group = group  # registered once, so .to()/state_dict/describe see its tensors
                setattr(parent, name, part)
            fused.append(f"{parent_name}.{'+'.join(names)}")
    return fused
