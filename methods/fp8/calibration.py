"""Static activation scales: the max |input| each linear layer sees on calibration data, over 448 (e4m3 max)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

E4M3_MAX = 448.0


@torch.no_grad()
def input_amax(model: nn.Module, layer_names: Sequence[str], batches: Sequence[torch.Tensor],
               progress: bool = True) -> dict[str, float]:
    """Run `batches` (token ids) through the full-precision model; max |x| at each named layer's input."""
    amax = {name: 0.0 for name in layer_names}
    hooks = []
    for name in layer_names:
        def hook(module, args, name=name):
            amax[name] = max(amax[name], args[0].detach().abs().max().item())
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    device = next(model.parameters()).device
    try:
        for ids in tqdm(batches, desc="fp8 calibration", disable=not progress, leave=False):
            model(input_ids=ids.to(device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return amax


def static_input_scale(amax: float) -> torch.Tensor:
    """Per-tensor input scale (dequant multiplier); a layer that only saw zeros gets scale 1."""
    return torch.tensor([amax / E4M3_MAX if amax > 0 else 1.0], dtype=torch.float32)
