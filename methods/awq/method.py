"""AWQ (`quant_method: awq`): config, and the online path (calibrate + quantize a full-precision model).

Checkpoints use the AutoAWQ GEMM layout (methods/awq/format.py); the layer's forward is the W4A16 kernel
(methods/awq/linear.py). Only what the layout can hold is accepted: 4 bits, zero points, version gemm.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from methods.awq import format as fmt
from methods.awq.linear import AWQLinearMethod
from methods.awq.search import SearchOptions, awq_spec
from methods.base import LinearMethodBase, QuantizationConfig, register_method

VERSIONS = ("gemm",)
BACKENDS = ("auto", "triton", "torch")
# HF's AwqConfig writes its packing backend under the same key as our kernel backend.
HF_BACKENDS = {"autoawq": "auto"}


@register_method("awq")
@dataclasses.dataclass
class AWQConfig(QuantizationConfig):
    quant_method: str = "awq"
    # --- checkpoint keys (AutoAWQ / HF / vLLM `quantization_config`)
    bits: int = 4
    # Input rows sharing one scale/zero point; -1 = one group per output channel.
    group_size: int = 128
    zero_point: bool = True
    version: str = "gemm"
    # --- run options
    # Scale exponents tried (a = i / n_grid); duo_scaling divides by the weights' mean magnitude (AutoAWQ default).
    n_grid: int = 20
    duo_scaling: bool = False
    # Clip search: shrink each group's range by 1/clip_grid steps down to max_shrink, on clip_tokens tokens.
    clip: bool = True
    clip_grid: int = 20
    max_shrink: float = 0.5
    clip_tokens: int = 512
    calibration_samples: int = 128
    calibration_seq_len: int = 512
    # W4A16 kernel backend; see kernels/w4a16.py.
    backend: str = "auto"

    @classmethod
    def ignored_keys(cls) -> tuple[str, ...]:
        # Written by AutoAWQ / transformers; none changes how GEMM tensors are read.
        return ("w_bit", "q_group_size", "do_fuse", "fuse_max_seq_len", "modules_to_fuse", "exllama_config")

    @classmethod
    def from_dict(cls, d: dict) -> "AWQConfig":
        d = dict(d)
        for alias, key in (("w_bit", "bits"), ("q_group_size", "group_size")):  # AutoAWQ's quant_config names
            if alias in d and key not in d:
                d[key] = d[alias]
        backend = str(d.get("backend", "auto")).lower()
        if backend == "llm-awq":
            raise ValueError("awq: backend='llm-awq' checkpoints use MIT llm-awq's own packing, which is not "
                             "supported; use an AutoAWQ (backend='autoawq', version='gemm') checkpoint")
        d["backend"] = HF_BACKENDS.get(backend, backend)
        return super().from_dict(d)

    def validate(self) -> None:
        self.quant_method = self.name
        self.version = str(self.version).lower()
        if self.bits != fmt.BITS:
            raise ValueError(f"awq: bits={self.bits} is not supported; the AutoAWQ GEMM layout is 4-bit (bits=4)")
        if self.group_size != -1 and self.group_size <= 0:
            raise ValueError(f"awq: group_size={self.group_size} must be positive (64, 128) or -1 (per channel)")
        if not self.zero_point:
            raise ValueError("awq: zero_point=false (symmetric AWQ) is not supported; the GEMM layout stores zero "
                             "points: use zero_point=true")
        if self.version not in VERSIONS:
            raise ValueError(f"awq: version={self.version!r} is not supported; supported: {list(VERSIONS)} "
                             f"(AutoAWQ GEMM layout). Re-export with version='gemm' or use vLLM/AutoAWQ for it")
        if self.backend not in BACKENDS:
            raise ValueError(f"awq: backend={self.backend!r}; use one of {list(BACKENDS)}")
        for name in ("n_grid", "clip_grid", "clip_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"awq: {name}={getattr(self, name)} must be positive")
        if not 0 <= self.max_shrink < 1:
            raise ValueError(f"awq: max_shrink={self.max_shrink} must lie in [0, 1)")
        # AWQ never quantizes the output head (AutoAWQ, HF and vLLM all leave it in full precision).
        self.modules_to_not_convert = list(self.modules_to_not_convert or [])
        if "lm_head" not in self.modules_to_not_convert:
            self.modules_to_not_convert.append("lm_head")

    def is_skipped(self, module_name: str) -> bool:
        """Our fnmatch patterns, or AutoAWQ's substring match (`"visual"` skips every layer under visual)."""
        return super().is_skipped(module_name) or any(
            p in module_name for p in self.modules_to_not_convert if not any(c in p for c in "*?["))

    @property
    def search_options(self) -> SearchOptions:
        return SearchOptions(n_grid=self.n_grid, duo_scaling=self.duo_scaling, clip=self.clip,
                             clip_grid=self.clip_grid, max_shrink=self.max_shrink, clip_tokens=self.clip_tokens)

    def checkpoint_config(self) -> dict:
        """The `quantization_config` of an exported checkpoint: the format's keys only."""
        skip = [p for p in self.modules_to_not_convert if p != "lm_head"]
        return {"quant_method": "awq", "bits": self.bits, "group_size": self.group_size,
                "zero_point": self.zero_point, "version": self.version, "modules_to_not_convert": skip or None}

    def get_linear_method(self) -> LinearMethodBase:
        return AWQLinearMethod(group_size=self.group_size, backend=self.backend)

    def needs_calibration(self) -> bool:
        return not self.from_checkpoint

    def prepare_model(self, model: nn.Module, calibration: Optional[Sequence[torch.Tensor]] = None,
                      progress: bool = True) -> list[str]:
        """Scale, clip and quantize every non-skipped nn.Linear of the decoder blocks on `calibration`, each
        swapped for a QuantLinear filled through the checkpoint path (AWQ tensors -> load -> repack)."""
        from methods.awq.blocks import awq_blocks
        from methods.loader import linear_layers

        if not calibration:
            raise ValueError("awq needs calibration batches (the harness passes method.calibration_samples windows "
                             "of the dataset's calibration text)")
        spec = awq_spec(self.group_size)
        installed: list[str] = []

        def install(name: str, linear: nn.Linear) -> None:
            install_layer(model, self, name, linear)
            installed.append(name)

        awq_blocks(model, spec, self.search_options, calibration, self.is_skipped, install, progress=progress)
        outside = [name for name, _ in linear_layers(model, self)]
        if outside:
            warnings.warn(f"awq: {outside} lie outside the decoder blocks; they are quantized by RTN")
            for name in outside:
                install(name, model.get_submodule(name))
        return installed

    def prepare_speed_only(self, model: nn.Module, progress: bool = True) -> list[str]:
        """Round-to-nearest into the AutoAWQ GEMM layout, skipping the scale and clip searches (meaningless on
        random weights): the same tensors and kernel as AWQ."""
        from tqdm.auto import tqdm

        from methods.loader import linear_layers

        names = [name for name, _ in linear_layers(model, self)]
        for name in tqdm(names, desc="quantize [awq, speed only]", disable=not progress, leave=False):
            install_layer(model, self, name, model.get_submodule(name))
        return names


def install_layer(model: nn.Module, config: AWQConfig, name: str, linear: nn.Linear) -> None:
    """RTN-quantize `linear` on the AWQ grid and replace it by an AWQ QuantLinear loaded from those tensors."""
    from methods.gptq.quantizer import rtn
    from methods.loader import install_quantized

    fmt.check_shape(linear.in_features, linear.out_features)
    tensors = fmt.to_checkpoint(rtn(linear.weight, awq_spec(config.group_size)), bias=linear.bias)
    install_quantized(model, config, name, tensors)
