"""`none`: the unquantized baseline, through the same QuantLinear path as every method."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from methods.base import LinearMethodBase, QuantizationConfig, QuantLinear, register_method


class UnquantizedLinearMethod(LinearMethodBase):
    fuse_dims = {"weight": 0}

    def create_weights(self, layer: QuantLinear) -> None:
        layer.register("weight", layer.new_tensor((layer.out_features, layer.in_features), layer.params_dtype))

    def apply(self, layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, layer.weight, layer.bias)


@register_method("none")
@dataclasses.dataclass
class NoQuantConfig(QuantizationConfig):
    quant_method: str = "none"

    def get_linear_method(self) -> LinearMethodBase:
        return UnquantizedLinearMethod()
