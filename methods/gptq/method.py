"""GPTQ (`quant_method: gptq`): config, linear method, and the online path (quantize a full-precision model).

Checkpoint tensors per layer: see methods/gptq/format.py. `rtn` is the same method and checkpoint format with
round-to-nearest instead of GPTQ (no calibration); it is registered under its own name so result records and
reports keep the two apart, and its checkpoints say `quant_method: gptq` like any other.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar, Optional, Sequence

import torch
from torch import nn

from methods.base import LinearMethodBase, QuantizationConfig, register_method
from methods.gptq import format as fmt
from methods.gptq.linear import GPTQLinearMethod
from methods.gptq.quantizer import QuantSpec

ALGORITHMS = ("gptq", "rtn")
BACKENDS = ("auto", "triton", "torch")  # kernels.w4a16.w4a16_matmul


@register_method("gptq")
@dataclasses.dataclass
class GPTQConfig(QuantizationConfig):
    quant_method: str = "gptq"
    # --- checkpoint keys (AutoGPTQ / GPTQModel / HF `quantization_config`)
    bits: int = 4
    # Input rows sharing one scale/zero; -1 = one group per output channel.
    group_size: int = 128
    # Act-order: quantize input columns in order of decreasing Hessian diagonal (g_idx then groups rows by that
    # order unless static_groups).
    desc_act: bool = False
    # Symmetric grid (zero = 2^(bits-1)); False fits a zero point per group.
    sym: bool = True
    # With desc_act: keep groups as contiguous input rows, scale/zero fixed before quantizing.
    static_groups: bool = False
    # Without desc_act: group-aware reordering (GAR, GPTQModel's act_group_aware, on by default there too):
    # act-order inside row groups, groups by their largest Hessian diagonal. The checkpoint keeps plain row
    # groups (no g_idx permutation), so kernels keep their fast path. On the embedded model it is what makes
    # GPTQ beat RTN without act-order (results/h100/README.md).
    act_group_aware: bool = True
    legacy_defaults: ClassVar[dict] = {"act_group_aware": False}  # records from before GAR existed
    # Damping added to the Hessian diagonal, as a fraction of its mean.
    damp_percent: float = 0.01
    # Quantize q/k/v, then o, then up/gate, then down, each on inputs through the already-quantized ones.
    true_sequential: bool = True
    # gptq (v1, AutoGPTQ: qzeros hold zero - 1) or gptq_v2 (GPTQModel: qzeros hold zero).
    checkpoint_format: str = "gptq"
    # --- run options
    # gptq, or rtn: round-to-nearest on the same grid (the baseline GPTQ is measured against).
    algorithm: str = "gptq"
    # Lazy-update block width of the GPTQ column loop (speed only; the result is the same).
    block_size: int = 128
    calibration_samples: int = 128
    calibration_seq_len: int = 512
    # W4A16 kernel backend: auto (Triton on GPU, torch on CPU), triton or torch; see kernels/w4a16.py.
    backend: str = "auto"

    @classmethod
    def ignored_keys(cls) -> tuple[str, ...]:
        # Written by AutoGPTQ/GPTQModel/transformers; none changes how the tensors are read (from_dict rejects
        # the few that would when they are set: lm_head, dynamic, modules_in_block_to_quantize, is_marlin_format).
        return ("model_name_or_path", "model_file_base_name", "is_marlin_format", "meta", "pack_dtype", "lm_head",
                "dynamic", "tokenizer", "dataset", "use_cuda_fp16", "model_seqlen", "block_name_to_quantize",
                "module_name_preceding_first_block", "batch_size", "pad_token_id", "use_exllama",
                "max_input_length", "exllama_config", "cache_block_outputs", "modules_in_block_to_quantize",
                "mse", "v2", "v2_alpha", "damp_auto_increment", "quantizer", "format", "bits_per_param")

    @classmethod
    def from_dict(cls, d: dict) -> "GPTQConfig":
        unsupported = {
            "lm_head": (d.get("lm_head"), "a quantized lm_head"),
            "dynamic": (d.get("dynamic"), "per-module overrides (`dynamic`)"),
            "modules_in_block_to_quantize": (d.get("modules_in_block_to_quantize"), "partly quantized blocks"),
            "is_marlin_format": (d.get("is_marlin_format"), "the Marlin-repacked layout"),
        }
        for key, (value, what) in unsupported.items():
            if value:
                raise ValueError(f"gptq: {key}={value!r}: {what} is not supported; re-export the checkpoint "
                                 f"without it (AutoGPTQ/GPTQModel defaults)")
        if d.get("pack_dtype") not in (None, "int32", "torch.int32"):
            raise ValueError(f"gptq: pack_dtype={d['pack_dtype']!r} is not supported; only int32 packing is")
        d = dict(d)
        if "checkpoint_format" not in d and "format" in d:  # GPTQModel's name for it
            d["checkpoint_format"] = d["format"]
        return super().from_dict(d)

    def validate(self) -> None:
        self.quant_method = self.name
        if self.bits not in fmt.SUPPORTED_BITS:
            raise ValueError(f"gptq: bits={self.bits} is not supported; use one of {list(fmt.SUPPORTED_BITS)} "
                             f"(2/3-bit GPTQ checkpoints have no kernel here)")
        if self.group_size != -1 and self.group_size <= 0:
            raise ValueError(f"gptq: group_size={self.group_size} must be positive or -1 (per output channel)")
        if self.checkpoint_format not in fmt.FORMATS:
            raise ValueError(f"gptq: checkpoint_format={self.checkpoint_format!r} is not supported; use one of "
                             f"{list(fmt.FORMATS)}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"gptq: algorithm={self.algorithm!r} is not supported; use one of {list(ALGORITHMS)}")
        if not 0 < self.damp_percent <= 1:
            raise ValueError(f"gptq: damp_percent={self.damp_percent} must lie in (0, 1]")
        if self.backend not in BACKENDS:
            raise ValueError(f"gptq: backend={self.backend!r} is not supported; use one of {list(BACKENDS)}")
        if self.block_size <= 0:
            raise ValueError(f"gptq: block_size={self.block_size} must be positive")
        if self.algorithm == "rtn":
            self.act_group_aware = False  # an order of GPTQ's column loop; round-to-nearest has none
        if self.algorithm == "rtn" and self.desc_act:
            raise ValueError("gptq: desc_act orders columns by calibration activations, which rtn does not use; "
                             "set desc_act=false or algorithm=gptq")

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(bits=self.bits, group_size=self.group_size, sym=self.sym,
                         checkpoint_format=self.checkpoint_format, desc_act=self.desc_act,
                         static_groups=self.static_groups, damp_percent=self.damp_percent,
                         block_size=self.block_size, act_group_aware=self.act_group_aware)

    def checkpoint_config(self) -> dict:
        """The `quantization_config` an exported checkpoint carries (always `quant_method: gptq`)."""
        d = self.to_dict()
        d.pop("backend")
        return d | {"quant_method": "gptq"}

    def extra_config_files(self) -> dict[str, dict]:
        """AutoGPTQ reads the quantization config from quantize_config.json rather than config.json."""
        return {"quantize_config.json": self.checkpoint_config()}

    def get_linear_method(self) -> LinearMethodBase:
        return GPTQLinearMethod(bits=self.bits, group_size=self.group_size,
                                checkpoint_format=self.checkpoint_format, backend=self.backend)

    def needs_calibration(self) -> bool:
        return self.algorithm == "gptq" and not self.from_checkpoint

    def prepare_model(self, model: nn.Module, calibration: Optional[Sequence[torch.Tensor]] = None,
                      progress: bool = True) -> list[str]:
        """Quantize every non-skipped nn.Linear (GPTQ block by block on `calibration`, or RTN) and swap each for a
        QuantLinear filled through the checkpoint path: checkpoint tensors -> load -> process. Under GPTQ the
        swap happens as soon as a layer is quantized, so later layers calibrate on what the kernel computes."""
        from methods.gptq.quantizer import rtn
        from methods.gptq.sequential import quantize_sequential
        from methods.loader import linear_layers

        targets = [name for name, _ in linear_layers(model, self)]
        done: set[str] = set()
        if self.algorithm == "gptq":
            if not calibration:
                raise ValueError("gptq needs calibration batches (the harness passes method.calibration_samples "
                                 "windows of the dataset's calibration text); or use method=rtn")

            def install(name, linear, result):
                install_layer(model, self, name, result.layer)
                done.add(name)

            quantize_sequential(model, self.spec, calibration, self.is_skipped, true_sequential=self.true_sequential,
                                progress=progress, on_layer=install)
            outside = [name for name in targets if name not in done]
            if outside:
                warnings.warn(f"gptq: {outside} lie outside the decoder blocks; they are quantized by RTN")
        for name in targets:
            if name not in done:
                install_layer(model, self, name, rtn(model.get_submodule(name).weight, self.spec))
        return targets

    def prepare_speed_only(self, model: nn.Module, progress: bool = True) -> list[str]:
        """Round-to-nearest into this config's GPTQ layout (bits, group size, format): the same tensors and kernel
        as GPTQ, without its calibration (meaningless on random weights, and slow at 7B)."""
        if self.desc_act:
            raise ValueError("gptq: desc_act=true orders columns by calibration activations, which a random-weight "
                             "speed run does not have; measure speed with desc_act=false")
        return dataclasses.replace(self, algorithm="rtn").prepare_model(model, None, progress=progress)


@register_method("rtn")
@dataclasses.dataclass
class RTNConfig(GPTQConfig):
    """Round-to-nearest into the GPTQ layout: `method=rtn` is `method=gptq method.algorithm=rtn`."""

    quant_method: str = "rtn"
    algorithm: str = "rtn"
    act_group_aware: bool = False

    def validate(self) -> None:
        self.algorithm = "rtn"
        super().validate()


def install_layer(model: nn.Module, config: GPTQConfig, name: str, layer: fmt.GPTQLayer) -> None:
    """Replace the nn.Linear `name` by a GPTQ QuantLinear loaded from `layer`'s checkpoint tensors."""
    from methods.loader import install_quantized

    bias = model.get_submodule(name).bias
    install_quantized(model, config, name, fmt.to_checkpoint(layer, config.checkpoint_format, bias=bias))
