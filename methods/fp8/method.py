"""FP8 (float8_e4m3fn) weights and activations, like vLLM's Fp8LinearMethod and llm-compressor's FP8 schemes.

Tensors of a layer, in the HF `quant_method: fp8` checkpoint layout:
  weight            float8_e4m3fn [out, in]
  weight_scale      float32 [1] (per tensor) or [out, 1] (per channel); dequantized W = weight * weight_scale
  weight_scale_inv  float32 [ceil(out/bn), ceil(in/bk)] for `weight_block_size: [bn, bk]` (DeepSeek-V3 naming;
                    despite the name it multiplies: W = weight * weight_scale_inv per block)
  input_scale       float32 [1], only with `activation_scheme: static`
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from kernels import fp8 as fp8k
from methods.base import FusionError, LinearMethodBase, QuantizationConfig, QuantLinear, register_method

WEIGHT_GRANULARITIES = ("tensor", "channel", "block")
ACTIVATION_SCHEMES = ("dynamic", "static")
ACTIVATION_GRANULARITIES = ("tensor", "token")
BACKENDS = ("auto", "gemv", "torch", "triton", "gluon", "scaled_mm")


@register_method("fp8")
@dataclasses.dataclass
class FP8Config(QuantizationConfig):
    quant_method: str = "fp8"
    # How weight scales are shared: one per tensor, one per output channel, or one per weight_block_size block.
    weight_granularity: str = "tensor"
    weight_block_size: Optional[list[int]] = None
    # dynamic: scales computed from each batch at run time; static: one calibrated input_scale per layer.
    activation_scheme: str = "dynamic"
    activation_granularity: str = "tensor"
    backend: str = "auto"
    # torch._scaled_mm without fp32 promotion of the FP8 accumulator along K: faster prefill, as vLLM's CUTLASS
    # FP8 kernels and torchao's Float8Linear forward run it; false for cuBLASLt's promoted accumulation.
    fast_accum: bool = True
    # Checkpoint tensor name of block scales: HF/DeepSeek write weight_scale_inv, compressed-tensors weight_scale.
    block_scale_name: str = "weight_scale_inv"
    # Static calibration: how many windows of how many tokens from the run's dataset.
    calibration_samples: int = 16
    calibration_seq_len: int = 512

    @classmethod
    def ignored_keys(cls) -> tuple[str, ...]:
        return ("fmt", "ignored_layers")

    def validate(self) -> None:
        if self.weight_block_size is not None:
            self.weight_block_size = [int(v) for v in self.weight_block_size]
            if len(self.weight_block_size) != 2 or min(self.weight_block_size) <= 0:
                raise ValueError(f"fp8: weight_block_size must be two positive ints, got {self.weight_block_size}")
            self.weight_granularity = "block"
        elif self.weight_granularity == "block":
            self.weight_block_size = [128, 128]
        for name, value, allowed in (("weight_granularity", self.weight_granularity, WEIGHT_GRANULARITIES),
                                     ("activation_scheme", self.activation_scheme, ACTIVATION_SCHEMES),
                                     ("activation_granularity", self.activation_granularity, ACTIVATION_GRANULARITIES),
                                     ("backend", self.backend, BACKENDS)):
            if value not in allowed:
                raise ValueError(f"fp8: {name}={value!r} is not supported; use one of {list(allowed)}")
        if self.activation_scheme == "static" and self.activation_granularity != "tensor":
            raise ValueError("fp8: static activation scales are per tensor; set activation_granularity=tensor")
        if self.weight_granularity == "block" and self.activation_scheme == "static":
            raise ValueError("fp8: block-scaled weights take dynamic per-token-group activations; "
                             "set activation_scheme=dynamic")

    def to_dict(self) -> dict:
        """HF `quant_method: fp8` keys (vLLM reads activation_scheme, weight_block_size); ours for the rest."""
        d = {"quant_method": "fp8", "activation_scheme": self.activation_scheme,
             "modules_to_not_convert": list(self.modules_to_not_convert)}
        if self.weight_block_size is not None:
            d["weight_block_size"] = list(self.weight_block_size)
        else:
            d["weight_granularity"] = self.weight_granularity
        if self.activation_scheme == "dynamic":
            d["activation_granularity"] = self.activation_granularity
        return d

    def get_linear_method(self) -> LinearMethodBase:
        return FP8LinearMethod(self)

    def needs_calibration(self) -> bool:
        return self.activation_scheme == "static" and not self.from_checkpoint

    def prepare_model(self, model, calibration=None, progress: bool = True) -> list[str]:
        """Quantize weights; with static activations, first record each layer's input range on `calibration`."""
        from methods.fp8.calibration import input_amax, static_input_scale
        from methods.loader import linear_layers, quantize_model

        amax = None
        if self.activation_scheme == "static":
            if not calibration:
                raise ValueError("fp8 activation_scheme=static needs calibration batches (the run's dataset "
                                 "provides them; set method.calibration_samples > 0)")
            names = [n for n, _ in linear_layers(model, self)]
            amax = input_amax(model, names, calibration, progress)
        swapped = quantize_model(model, self, progress=progress)
        if amax is not None:
            for name in swapped:
                layer = model.get_submodule(name)
                layer.input_scale.data = static_input_scale(amax[name]).to(layer.input_scale.device)
        return swapped


class FP8LinearMethod(LinearMethodBase):
    fuse_dims = {"weight": 0, "weight_scale": 0, "weight_scale_inv": 0}

    def __init__(self, config: FP8Config):
        self.config = config

    @property
    def _scale_name(self) -> str:
        return self.config.block_scale_name if self.config.weight_granularity == "block" else "weight_scale"

    def _scale_shape(self, layer: QuantLinear) -> tuple[int, ...]:
        c = self.config
        if c.weight_granularity == "block":
            bn, bk = c.weight_block_size
            return (-(-layer.out_features // bn), -(-layer.in_features // bk))
        return (layer.out_features, 1) if c.weight_granularity == "channel" else (1,)

    def create_weights(self, layer: QuantLinear) -> None:
        shape = (layer.out_features, layer.in_features)
        if not self.config.from_checkpoint:
            layer.register("weight", layer.new_tensor(shape, layer.params_dtype))
            return
        layer.register("weight", layer.new_tensor(shape, torch.float8_e4m3fn))
        layer.register(self._scale_name, layer.new_tensor(self._scale_shape(layer), torch.float32))
        if self.config.activation_scheme == "static":
            layer.register("input_scale", layer.new_tensor((1,), torch.float32))

    def process_weights_after_loading(self, layer: QuantLinear) -> None:
        c = self.config
        if c.from_checkpoint:
            if layer.weight.dtype != torch.float8_e4m3fn:
                raise ValueError(f"fp8 checkpoint weight has dtype {layer.weight.dtype}, expected float8_e4m3fn")
            scale = getattr(layer, self._scale_name)
            if not torch.isfinite(scale).all() or (scale <= 0).any():
                raise ValueError(f"fp8 checkpoint {self._scale_name} has non-positive or non-finite values")
            return
        w = layer.weight.data
        if c.weight_granularity == "block":
            q, scale = fp8k.quantize_fp8_block(w, tuple(c.weight_block_size))
        elif c.weight_granularity == "channel":
            q, scale = fp8k.quantize_fp8_per_channel(w)
        else:
            q, scale = fp8k.quantize_fp8_per_tensor(w)
        layer.weight = torch.nn.Parameter(q, requires_grad=False)
        layer.register(self._scale_name, scale.to(torch.float32).reshape(self._scale_shape(layer)))
        if c.activation_scheme == "static" and not hasattr(layer, "input_scale"):
            # Filled by methods.fp8.calibration before the layer is used.
            layer.register("input_scale", torch.full((1,), float("nan"), device=q.device))

    def fuse_tensors(self, layers: list[QuantLinear], parts: list[dict[str, torch.Tensor]]) -> dict:
        """Weights and per-channel or block scales concatenate along N; per-tensor weight scales become per-channel
        ([N, 1], each part's scale over its rows: the same weights, run row-wise), block scales need every part's
        N to be whole blocks. A static input_scale is shared (one input) and must be equal."""
        c = self.config
        name = self._scale_name
        if c.weight_granularity == "block" and any(layer.out_features % c.weight_block_size[0] for layer in layers):
            raise FusionError(f"fp8: out_features {[layer.out_features for layer in layers]} are not whole "
                              f"{c.weight_block_size[0]}-row blocks; these layers cannot fuse")
        scaled = []
        for layer, part in zip(layers, parts):
            scale = part[name]
            if c.weight_granularity == "tensor" or scale.numel() == 1:
                scale = scale.reshape(1, 1).expand(layer.out_features, 1)
            scaled.append(part | {name: scale})
        return super().fuse_tensors(layers, scaled)

    def apply(self, layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        input_scale = getattr(layer, "input_scale", None)
        compiling = torch.compiler.is_compiling()
        # The NaN check reads the scale on the host: skipped while a CUDA graph is being captured (no syncs there)
        # or a step compiled (the eager steps before it checked).
        if c.activation_scheme == "static" and (input_scale is None or (
                not compiling and not (x.is_cuda and torch.cuda.is_current_stream_capturing())
                and torch.isnan(input_scale).any())):
            raise RuntimeError("fp8 static activation scheme: input_scale not calibrated; run calibration first")
        x2 = x.reshape(-1, x.shape[-1])
        args = (x2, layer.weight, getattr(layer, self._scale_name))
        opts = dict(activation_scheme=c.activation_scheme, act_granularity=c.activation_granularity,
                    input_scale=input_scale, bias=layer.bias, backend=c.backend, out_dtype=x.dtype,
                    fast_accum=c.fast_accum)
        if compiling:  # one opaque op for torch.compile (no graph breaks)
            y = fp8k.fp8_linear_op(*args, block_size=list(c.weight_block_size) if c.weight_block_size else None,
                                   **opts)
        else:
            y = fp8k.fp8_linear(*args, block_size=tuple(c.weight_block_size) if c.weight_block_size else None,
                                **opts)
        return y.reshape(*x.shape[:-1], layer.out_features)
