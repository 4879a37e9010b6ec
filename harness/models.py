"""Load a causal LM and its tokenizer: embedded default, local directory, or hub name; quantized or not."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import methods
from harness.assets import embedded_model_dir
from harness.config import ModelConf

EMBEDDED_PREFIX = "embedded:"


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    path: str
    # The checkpoint's own quantization method, when it came quantized (e.g. a GPTQ checkpoint).
    checkpoint_method: methods.QuantizationConfig | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} asked for but no CUDA GPU is visible; use device=cpu or device=auto")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"model.dtype={name!r} is not a floating dtype; use auto, float32, bfloat16 or float16")
    return dtype


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(embedded_model_dir(name_or_path[len(EMBEDDED_PREFIX):]))
    return name_or_path


def _no_init():
    try:
        from transformers.initialization import no_init_weights
        return no_init_weights()
    except ImportError:  # older transformers
        return contextlib.nullcontext()


def _checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise methods.CheckpointError(f"{path}: no *.safetensors files; quantized checkpoints load from safetensors")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_quantized_checkpoint(path: str, qconfig: methods.QuantizationConfig, dtype: torch.dtype,
                              device: torch.device) -> nn.Module:
    """Build the architecture, swap its linear layers for the checkpoint's method, fill, then process."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with _no_init():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    methods.replace_linear_layers(model, qconfig)
    methods.load_state_into_model(model, _checkpoint_state(Path(path)))
    model.to(device)
    from methods.loader import process_all
    process_all(model)
    return model.eval()


def load_model(conf: ModelConf, device: torch.device) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(conf.name_or_path)
    dtype = resolve_dtype(conf.dtype, device)
    kw = dict(revision=conf.revision, trust_remote_code=conf.trust_remote_code)
    hf_config = AutoConfig.from_pretrained(path, **kw)
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    qc = getattr(hf_config, "quantization_config", None)
    checkpoint_method = None
    if conf.random_weights:
        if qc is not None:
            del hf_config.quantization_config
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype).to(device)
    elif qc is not None:
        checkpoint_method = methods.QuantizationConfig.from_config(hf_config)
        model = load_quantized_checkpoint(path, checkpoint_method, dtype, device)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw).to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, path=path, checkpoint_method=checkpoint_method)


def describe(model: nn.Module) -> dict:
    """Parameter count and the bytes its weights occupy (as stored, after quantization)."""
    seen, n_params, n_bytes = set(), 0, 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        n_params += t.numel()
        n_bytes += t.numel() * t.element_size()
    cfg = getattr(model, "config", None)
    return {"architecture": type(model).__name__, "parameters": n_params, "weight_bytes": n_bytes,
            "config": json.loads(cfg.to_json_string()) if cfg is not None else None}
