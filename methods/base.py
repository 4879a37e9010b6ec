"""Method interface, modelled on vLLM's QuantizationConfig / QuantizeMethodBase.

A method is a dataclass config (its fields are the checkpoint's `quantization_config` keys plus run options)
registered under its `quant_method` name, and a linear method that owns a `QuantLinear` layer's tensors:
`create_weights` registers them, the loader fills them, `process_weights_after_loading` repacks or quantizes
them, `apply` computes the layer's output.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

_REGISTRY: dict[str, type["QuantizationConfig"]] = {}


class UnknownMethodError(ValueError):
    """Raised for a `quant_method` no registered method serves."""


class FusionError(ValueError):
    """Layers that cannot be fused into one (methods/fusion.py): other input sizes, methods or tensors."""


def register_method(name: str):
    """Class decorator: make a QuantizationConfig dataclass selectable as `quant_method: <name>`."""

    def deco(cls: type[QuantizationConfig]) -> type[QuantizationConfig]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def known_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type["QuantizationConfig"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown quantization method {name!r}; known methods: {', '.join(known_methods())}"
        ) from None


def _quantization_dict(hf_config: Any) -> dict | None:
    """The `quantization_config` of a transformers config, a config dict, or that dict itself."""
    if hf_config is None:
        return None
    if not isinstance(hf_config, dict):
        qc = getattr(hf_config, "quantization_config", None)
        if qc is None:
            return None
        hf_config = qc if isinstance(qc, dict) else qc.to_dict()
        return dict(hf_config)
    if "quant_method" in hf_config:
        return dict(hf_config)
    qc = hf_config.get("quantization_config")
    return None if qc is None else dict(qc if isinstance(qc, dict) else qc.to_dict())


@dataclasses.dataclass
class QuantizationConfig(ABC):
    """Base of every method config; subclasses are dataclasses decorated with @register_method."""

    name: ClassVar[str] = "base"
    # True when built from a checkpoint's quantization_config (tensors arrive quantized), False when the
    # method quantizes full-precision weights at load time. Set by from_config; not a config field.
    from_checkpoint: ClassVar[bool] = False
    # False for names that only describe checkpoints (dispatchers such as compressed-tensors): not a `method=`.
    selectable: ClassVar[bool] = True
    # Options added after records were written: the value they implicitly had in a record that lacks them.
    legacy_defaults: ClassVar[dict[str, Any]] = {}
    # Linear layers matched by these fnmatch patterns (on the module's qualified name, or its last part) stay in
    # full precision. HF calls the key `modules_to_not_convert`.
    modules_to_not_convert: list[str] = dataclasses.field(default_factory=lambda: ["lm_head"])

    @classmethod
    def from_config(cls, hf_config: Any) -> "QuantizationConfig":
        """Dispatch on `quantization_config.quant_method`; no quantization_config means the `none` baseline."""
        qc = _quantization_dict(hf_config)
        if qc is None:
            return get_method_class("none").from_dict({})
        method = qc.get("quant_method")
        if method is None:
            raise UnknownMethodError(
                f"quantization_config has no 'quant_method' key (keys: {sorted(qc)}); "
                f"add one of: {', '.join(known_methods())}"
            )
        cfg = get_method_class(str(method).lower()).from_dict(qc)
        cfg.from_checkpoint = True
        return cfg

    @classmethod
    def from_dict(cls, d: dict) -> "QuantizationConfig":
        """Build from a quantization_config dict; unknown keys are ignored with a warning."""
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in fields}
        extra = sorted(set(d) - fields - {"quant_method"} - set(cls.ignored_keys()))
        if extra:
            warnings.warn(f"{cls.name}: ignoring quantization_config keys {extra}", stacklevel=2)
        if known.get("modules_to_not_convert") is None:
            known.pop("modules_to_not_convert", None)
        cfg = cls(**known)
        cfg.validate()
        return cfg

    @classmethod
    def ignored_keys(cls) -> tuple[str, ...]:
        """Keys other tools write that carry no meaning for us (silences the unknown-key warning)."""
        return ()

    def validate(self) -> None:
        """Raise ValueError naming the bad option and the accepted values."""

    def to_dict(self) -> dict:
        """The `quantization_config` written into checkpoints and result records."""
        d = dataclasses.asdict(self)
        d["quant_method"] = self.name
        return d

    def checkpoint_config(self) -> dict:
        """The `quantization_config` a checkpoint we export carries (the format's own keys)."""
        return self.to_dict()

    def extra_config_files(self) -> dict[str, dict]:
        """Other JSON files some readers of the format expect beside config.json (name -> content)."""
        return {}

    def is_skipped(self, module_name: str) -> bool:
        leaf = module_name.rsplit(".", 1)[-1]
        return any(fnmatch.fnmatch(module_name, p) or fnmatch.fnmatch(leaf, p) for p in self.modules_to_not_convert)

    @abstractmethod
    def get_linear_method(self) -> "LinearMethodBase":
        ...

    def needs_calibration(self) -> bool:
        """Whether prepare_model wants calibration token batches."""
        return False

    def prepare_model(self, model: nn.Module, calibration: Sequence[torch.Tensor] | None = None,
                      progress: bool = True) -> list[str]:
        """Quantize a full-precision model in place (online methods: swap + quantize each linear layer).
        Calibration-based methods (GPTQ, AWQ, static FP8) override this and use `calibration` token batches."""
        from methods.loader import quantize_model

        return quantize_model(model, self, progress=progress)

    def prepare_speed_only(self, model: nn.Module, progress: bool = True) -> list[str]:
        """Quantize a model with random weights for a speed run, into the layout prepare_model produces, without
        calibration text (speed does not depend on the values). Default: prepare_model, calibrating (if the method
        calibrates) on a batch of random token ids. Methods whose calibration is costly override this with
        round-to-nearest into their own layout."""
        calibration = None
        if self.needs_calibration():
            cfg = model.config.get_text_config()
            gen = torch.Generator().manual_seed(0)
            calibration = [torch.randint(0, cfg.vocab_size, (1, 128), generator=gen)]
        return self.prepare_model(model, calibration, progress=progress)


class LinearMethodBase(ABC):
    """Owns the tensors and the forward of a QuantLinear (vLLM's QuantizeMethodBase)."""

    # How fusing sibling layers (one input, outputs concatenated: methods/fusion.py) joins this method's tensors:
    # tensor name -> its output-feature dimension, along which the parts are concatenated (bias: 0). A tensor
    # not listed must be equal in every part (a shared input's g_idx or static input scale). None: cannot fuse.
    fuse_dims: ClassVar[dict[str, int] | None] = None
    # Tensors whose output-feature columns interleave (kernels.w4a16.interleave_glu) when a gate/up pair fuses into
    # one layer that applies silu(gate) * up itself (`apply_glu`); empty: the method cannot (methods/fusion.py then
    # concatenates the pair as any siblings).
    glu_tensors: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def create_weights(self, layer: "QuantLinear") -> None:
        """Register the parameters/buffers the checkpoint (or the full-precision model) fills."""

    def process_weights_after_loading(self, layer: "QuantLinear") -> None:
        """Quantize or repack the loaded tensors into what `apply` wants."""

    @abstractmethod
    def apply(self, layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
        ...

    def apply_glu(self, layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up of a fused gate_up layer whose `glu_tensors` columns alternate gate, up: [..., N / 2]."""
        raise NotImplementedError(f"{type(self).__name__} does not apply a fused activation")

    def fusion_parts(self, layers: list["QuantLinear"]) -> list[dict[str, torch.Tensor]]:
        """Each layer's tensors, as `fuse_tensors` joins them (default: as registered)."""
        return [{k: v.data for k, v in layer.named_parameters(recurse=False)} for layer in layers]

    def checkpoint_tensors(self, layer: "QuantLinear") -> dict[str, torch.Tensor]:
        """The layer's tensors as the checkpoint format stores them (default: as registered)."""
        tensors = dict(layer.named_parameters(recurse=False)) | dict(layer.named_buffers(recurse=False))
        return {k: v.data for k, v in tensors.items() if v is not None}

    def fuse_tensors(self, layers: list["QuantLinear"], parts: list[dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor]:
        """The tensors of one layer computing every part's output, concatenated (default: by `fuse_dims`)."""
        if self.fuse_dims is None:
            raise FusionError(f"{type(self).__name__} does not fuse layers")
        dims = {"bias": 0} | self.fuse_dims
        out = {}
        for name in parts[0]:
            values = [p[name] for p in parts]
            if name in dims:
                out[name] = torch.cat(values, dim=dims[name])
            elif all(v.shape == values[0].shape and torch.equal(v, values[0]) for v in values[1:]):
                out[name] = values[0]
            else:
                raise FusionError(f"{type(self).__name__}: {name} differs between the layers; they cannot fuse")
        return out


class QuantLinear(nn.Module):
    """A linear layer whose tensors and forward belong to a LinearMethod."""

    def __init__(self, in_features: int, out_features: int, bias: bool, method: LinearMethodBase,
                 params_dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.params_dtype, self.has_bias = params_dtype, bias
        self.method = method
        self._init_device = torch.device(device) if device is not None else torch.device("cpu")
        method.create_weights(self)
        if bias and "bias" not in self._parameters and "bias" not in self._buffers:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=params_dtype, device=self._init_device),
                                     requires_grad=False)
        elif not bias:
            self.bias = None

    @classmethod
    def assemble(cls, in_features: int, out_features: int, method: LinearMethodBase,
                 tensors: dict[str, torch.Tensor], params_dtype: torch.dtype) -> "QuantLinear":
        """A layer holding ready tensors (a fused layer), without create_weights."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = in_features, out_features
        layer.params_dtype, layer.has_bias, layer.method = params_dtype, tensors.get("bias") is not None, method
        layer._init_device = next(iter(tensors.values())).device
        for name, tensor in tensors.items():
            layer.register(name, tensor)
        if not layer.has_bias:
            layer.bias = None
        return layer

    def new_tensor(self, shape, dtype) -> torch.Tensor:
        """An empty tensor on the layer's device, for create_weights."""
        return torch.empty(shape, dtype=dtype, device=self._init_device)

    def register(self, name: str, tensor: torch.Tensor | None) -> None:
        """Register a non-trainable parameter (so `.to()` and state_dict see it); None: the attribute is None."""
        self.register_parameter(name, None if tensor is None else nn.Parameter(tensor, requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.apply(self, x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, "
                f"method={type(self.method).__name__}")
