"""Swap a model's nn.Linear layers for QuantLinear layers and fill them (from the model or a checkpoint)."""

from __future__ import annotations

from typing import Iterator, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from methods.base import QuantizationConfig, QuantLinear


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not match what the method expects."""


def linear_layers(model: nn.Module, qconfig: QuantizationConfig) -> Iterator[tuple[str, nn.Linear]]:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not qconfig.is_skipped(name):
            yield name, module


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _empty_quant_linear(linear: nn.Linear, qconfig: QuantizationConfig, device=None) -> QuantLinear:
    return QuantLinear(linear.in_features, linear.out_features, linear.bias is not None,
                       qconfig.get_linear_method(), params_dtype=linear.weight.dtype,
                       device=device if device is not None else linear.weight.device)


def load_layer_tensors(layer: QuantLinear, tensors: Mapping[str, torch.Tensor], layer_name: str) -> None:
    """Copy a layer's tensors in, checking that each expected tensor is present with the expected shape/dtype."""
    expected = dict(layer.named_parameters(recurse=False)) | dict(layer.named_buffers(recurse=False))
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(
            f"{layer_name}: checkpoint is missing tensor(s) {missing} needed by "
            f"{type(layer.method).__name__} (has {sorted(tensors)}); check the checkpoint's quant_method/format")
    for key, dest in expected.items():
        src = tensors[key]
        if tuple(src.shape) != tuple(dest.shape) and src.squeeze().shape == dest.squeeze().shape:
            src = src.reshape(dest.shape)  # e.g. a 0-d per-tensor scale, or [N] for [N, 1]
        if tuple(src.shape) != tuple(dest.shape):
            raise CheckpointError(
                f"{layer_name}.{key}: checkpoint shape {tuple(src.shape)} != expected {tuple(dest.shape)} "
                f"for in_features={layer.in_features}, out_features={layer.out_features}; "
                f"check bits/group_size in quantization_config")
        exact = not dest.dtype.is_floating_point or dest.dtype.itemsize == 1  # packed ints and fp8: no casting
        if (exact and src.dtype != dest.dtype) or src.dtype.is_floating_point != dest.dtype.is_floating_point:
            raise CheckpointError(f"{layer_name}.{key}: checkpoint dtype {src.dtype}, expected {dest.dtype}; "
                                  "the checkpoint does not match its quantization_config")
        with torch.no_grad():
            dest.data = src.to(device=dest.device, dtype=dest.dtype).clone()


def replace_linear_layers(model: nn.Module, qconfig: QuantizationConfig, device=None) -> list[str]:
    """Swap every (non-skipped) nn.Linear for an empty QuantLinear; returns the swapped names."""
    names = []
    for name, linear in linear_layers(model, qconfig):
        _set_submodule(model, name, _empty_quant_linear(linear, qconfig, device))
        names.append(name)
    return names


def process_all(model: nn.Module, progress: bool = True) -> None:
    """Run process_weights_after_loading on every QuantLinear."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    for _, layer in tqdm(layers, desc="process weights", disable=not progress, leave=False):
        layer.method.process_weights_after_loading(layer)


def quantize_model(model: nn.Module, qconfig: QuantizationConfig, progress: bool = True) -> list[str]:
    """Online path: replace each nn.Linear by a QuantLinear filled from its own weights, then process it."""
    targets = list(linear_layers(model, qconfig))
    for name, linear in tqdm(targets, desc=f"quantize [{qconfig.name}]", disable=not progress, leave=False):
        install_quantized(model, qconfig, name, dict(linear.state_dict()))
    return [n for n, _ in targets]


def install_quantized(model: nn.Module, qconfig: QuantizationConfig, name: str,
                      tensors: Mapping[str, torch.Tensor]) -> None:
    """Replace the nn.Linear `name` by a QuantLinear loaded from `tensors` (its checkpoint layout), processed."""
    layer = _empty_quant_linear(model.get_submodule(name), qconfig)
    load_layer_tensors(layer, tensors, name)
    layer.method.process_weights_after_loading(layer)
    _set_submodule(model, name, layer)


def load_state_into_model(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Fill a model whose linear layers are already swapped: QuantLinear tensors through their checks, the
    rest (embeddings, norms) by name."""
    quant = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    by_layer: dict[str, dict[str, torch.Tensor]] = {n: {} for n in quant}
    rest = {}
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        if owner in by_layer:
            by_layer[owner][leaf] = tensor
        else:
            rest[key] = tensor
    for name, layer in quant.items():
        load_layer_tensors(layer, by_layer[name], name)
    own = {k for k in model.state_dict() if k.rpartition(".")[0] not in quant}
    missing = sorted(own - set(rest))
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if tied:
        missing = [k for k in missing if not k.startswith("lm_head.")]
    if strict and missing:
        raise CheckpointError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:5]}")
    model.load_state_dict(rest, strict=False, assign=False)
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
