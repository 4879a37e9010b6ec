"""Pluggable quantization methods: `QuantizationConfig.from_config(hf_config)` picks one by `quant_method`."""

from methods.base import (LinearMethodBase, QuantizationConfig, QuantLinear, UnknownMethodError,
                          get_method_class, known_methods, register_method)
from methods.loader import CheckpointError, load_state_into_model, quantize_model, replace_linear_layers

# Importing a method module registers it.
from methods import none as _none  # noqa: E402,F401
from methods import fp8 as _fp8  # noqa: E402,F401
from methods import compressed_tensors as _ct  # noqa: E402,F401
from methods import gptq as _gptq  # noqa: E402,F401
from methods import awq as _awq  # noqa: E402,F401

__all__ = ["CheckpointError", "LinearMethodBase", "QuantLinear", "QuantizationConfig", "UnknownMethodError",
           "get_method_class", "known_methods", "load_state_into_model", "quantize_model", "register_method",
           "replace_linear_layers"]
