"""llm-compressor / compressed-tensors checkpoints (`quant_method: compressed-tensors`), mapped onto our methods.

`format: float-quantized` (FP8 W8A8: weight fp8 + weight_scale, optional input_scale) is served by the fp8
method; other formats are refused with the list of what is supported.
"""

from __future__ import annotations

import dataclasses

from methods.base import QuantizationConfig, register_method
from methods.fp8.method import FP8Config

SUPPORTED_FORMATS = ("float-quantized",)


def _fp8_from_group(group: dict, ignore: list[str]) -> FP8Config:
    w = group.get("weights") or {}
    a = group.get("input_activations")
    if w.get("type") != "float" or w.get("num_bits") != 8:
        raise ValueError(f"compressed-tensors float-quantized: weights {w} are not 8-bit float; not supported")
    strategy = w.get("strategy", "tensor")
    opts: dict = {"modules_to_not_convert": list(ignore), "block_scale_name": "weight_scale"}
    if strategy == "block":
        opts["weight_block_size"] = list(w.get("block_structure") or [128, 128])
    elif strategy in ("tensor", "channel"):
        opts["weight_granularity"] = strategy
    else:
        raise ValueError(f"compressed-tensors: weight strategy {strategy!r} not supported (tensor, channel, block)")
    if a is None:
        raise ValueError("compressed-tensors: weight-only FP8 (no input_activations) is not supported yet; "
                         "supported: W8A8 FP8 with dynamic or static activations")
    opts["activation_scheme"] = "dynamic" if a.get("dynamic", True) else "static"
    if a.get("strategy") == "token":
        opts["activation_granularity"] = "token"
    return FP8Config.from_dict(opts)


@register_method("compressed-tensors")
@dataclasses.dataclass
class CompressedTensorsConfig(QuantizationConfig):
    """Only a dispatcher: from_dict returns the config of the method that serves the checkpoint."""

    quant_method: str = "compressed-tensors"
    selectable = False

    @classmethod
    def from_dict(cls, d: dict) -> QuantizationConfig:  # type: ignore[override]
        fmt = d.get("format")
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(f"compressed-tensors format {fmt!r} is not supported; supported: "
                             f"{list(SUPPORTED_FORMATS)}")
        groups = list((d.get("config_groups") or {}).values())
        if len(groups) != 1:
            raise ValueError(f"compressed-tensors: {len(groups)} config_groups; one group is supported")
        return _fp8_from_group(groups[0], d.get("ignore") or ["lm_head"])

    def get_linear_method(self):
        raise NotImplementedError("CompressedTensorsConfig.from_dict returns the serving method's config")
