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
PRESET_PREFIX = "preset:"
# Architecture-only presets (a config.json each, no weights, no tokenizer): real model sizes for speed runs.
PRESET_DIR = Path(__file__).resolve().parent / "model_configs"


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


def known_presets() -> list[str]:
    return sorted(p.parent.name for p in PRESET_DIR.glob("*/config.json"))


def resolve_model_path(name_or_path: str) -> str:
    """`embedded:<name>` and `preset:<name>` -> their local directory; anything else (path, hub name) as is."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(embedded_model_dir(name_or_path[len(EMBEDDED_PREFIX):]))
    if name_or_path.startswith(PRESET_PREFIX):
        name = name_or_path[len(PRESET_PREFIX):]
        if name not in known_presets():
            raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(known_presets())} "
                             f"(or give a local directory holding a config.json, or a hub name)")
        return str(PRESET_DIR / name)
    return name_or_path


def load_config(path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The transformers config of a local directory or hub name; a clear error when there is none."""
    from transformers import AutoConfig

    local = Path(path)
    if local.is_dir() and not (local / "config.json").is_file():
        raise ValueError(f"model directory {path} has no config.json; a model needs at least its config.json "
                         f"(with model.random_weights=true nothing else: no weights, no tokenizer)")
    try:
        return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot read the model config of {path!r}: {e}. Give a local directory with a valid "
                         f"config.json, a preset ({', '.join(PRESET_PREFIX + p for p in known_presets())}), "
                         f"or a hub name (needs the hub or its local cache)") from e


def _optional_tokenizer(path: str, **kw):
    """The tokenizer if the model ships one, else None (architecture-only presets and config directories)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError, TypeError):
        return None


def random_model(hf_config, dtype: torch.dtype, device: torch.device, seed: int = 0) -> nn.Module:
    """The architecture with randomly initialised weights, built directly on `device` in `dtype` (no float32 or
    CPU copy: a 7B model in bf16 takes 13.5 GB and seconds on a GPU)."""
    from transformers import AutoModelForCausalLM

    if getattr(hf_config, "quantization_config", None) is not None:
        del hf_config.quantization_config
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    return model.to(device)  # a no-op unless some tensor was created elsewhere


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
    """With random_weights the directory may hold only config.json; the tokenizer is then None."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.attention import IMPLEMENTATIONS

    if conf.attn_implementation not in IMPLEMENTATIONS:  # before any loading
        raise ValueError(f"model.attn_implementation={conf.attn_implementation!r}; use one of "
                         f"{sorted(IMPLEMENTATIONS)}")
    path = resolve_model_path(conf.name_or_path)
    dtype = resolve_dtype(conf.dtype, device)
    kw = dict(revision=conf.revision, trust_remote_code=conf.trust_remote_code)
    hf_config = load_config(path, **kw)
    qc = getattr(hf_config, "quantization_config", None)
    checkpoint_method = None
    if conf.random_weights:
        tokenizer = _optional_tokenizer(path, **kw)
        model = random_model(hf_config, dtype, device)
    elif qc is not None:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        checkpoint_method = methods.QuantizationConfig.from_config(hf_config)
        model = load_quantized_checkpoint(path, checkpoint_method, dtype, device)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw).to(device)
    model.eval()
    if conf.attn_implementation != "sdpa":
        from harness.attention import set_attention

        set_attention(model, conf.attn_implementation)
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
