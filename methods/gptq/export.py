"""Save a GPTQ-quantized model as a standard GPTQ checkpoint directory, and a command line that makes one.

Directory layout (what AutoGPTQ, GPTQModel, vLLM and transformers read):
  model.safetensors      quantized layers as <layer>.qweight/.qzeros/.scales/.g_idx[/.bias] (methods/gptq/format.py),
                         every other tensor (embeddings, norms, an unquantized lm_head) under its usual name, in the
                         model's dtype unless `dtype` says otherwise; a tied lm_head is not written twice
  config.json            the model's config plus `quantization_config` (quant_method gptq, bits, group_size, ...)
  quantize_config.json   the same quantization_config, for AutoGPTQ (which reads this file)
  tokenizer files, generation_config.json  when given / when the model has one

    python -m methods.gptq.export --out ckpt/smollm2-gptq-w4g128 [--bits 4 --group-size 128 --desc-act ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.base import QuantLinear
from methods.gptq.linear import GPTQLinearMethod
from methods.gptq.method import GPTQConfig


def checkpoint_state(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors to save: GPTQ layers in the checkpoint layout, the rest by name (shared tensors once)."""
    quant = {n: m for n, m in model.named_modules()
             if isinstance(m, QuantLinear) and isinstance(m.method, GPTQLinearMethod)}
    others = [n for n, m in model.named_modules() if isinstance(m, QuantLinear) and n not in quant]
    if others:
        raise ValueError(f"gptq export: layers {others[:3]} are quantized by another method; a GPTQ checkpoint "
                         f"holds GPTQ layers and full-precision tensors only")
    state: dict[str, torch.Tensor] = {}
    for name, layer in quant.items():
        for key, t in layer.method.checkpoint_tensors(layer).items():
            state[f"{name}.{key}"] = t.detach().cpu().contiguous()
    seen: set[int] = set()
    for key, t in model.state_dict(keep_vars=False).items():
        owner = key.rpartition(".")[0]
        if owner in quant:
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:  # tied weights (lm_head = embed_tokens): the loader re-ties them
            continue
        seen.add(ptr)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        state[key] = t.detach().cpu().contiguous()
    return state


def save_checkpoint(model: nn.Module, config: GPTQConfig, out_dir: str | Path, tokenizer: Any = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write `model` (after config.prepare_model) to `out_dir`; loads back with harness.models.load_model."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = checkpoint_state(model, dtype)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    qc = config.checkpoint_config()
    hf = json.loads(model.config.to_json_string(use_diff=False))
    hf.pop("quantization_config", None)
    float_dtypes = {t.dtype for k, t in state.items() if t.is_floating_point() and not k.endswith((".scales", ".bias"))}
    if len(float_dtypes) == 1:
        hf["dtype"] = str(float_dtypes.pop()).removeprefix("torch.")
    hf["quantization_config"] = qc
    (out / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    (out / "quantize_config.json").write_text(json.dumps(qc, indent=2, sort_keys=True) + "\n")
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> Path:
    """Quantize a model (default: the embedded SmolLM2-135M) on the dataset's calibration text and save it."""
    from harness import data
    from harness.config import DEFAULT_MODEL, DatasetConf, ModelConf
    from harness.models import load_model, resolve_device

    p = argparse.ArgumentParser(prog="python -m methods.gptq.export", description=main.__doc__)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--model", default=DEFAULT_MODEL, help="hub name, local directory, or embedded:<name>")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="model dtype while quantizing (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--save-dtype", default=None, help="dtype of the unquantized tensors saved (default: as loaded)")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--desc-act", action="store_true")
    p.add_argument("--static-groups", action="store_true")
    p.add_argument("--asym", action="store_true", help="fit a zero point per group (sym=False)")
    p.add_argument("--damp-percent", type=float, default=0.01)
    p.add_argument("--no-true-sequential", action="store_true")
    p.add_argument("--format", default="gptq", choices=["gptq", "gptq_v2"], help="checkpoint_format")
    p.add_argument("--algorithm", default="gptq", choices=["gptq", "rtn"])
    p.add_argument("--samples", type=int, default=GPTQConfig.calibration_samples)
    p.add_argument("--seq-len", type=int, default=GPTQConfig.calibration_seq_len)
    p.add_argument("--dataset", default="wiki", help="embedded corpus whose calibration text is used")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    cfg = GPTQConfig.from_dict(dict(
        bits=a.bits, group_size=a.group_size, desc_act=a.desc_act, static_groups=a.static_groups, sym=not a.asym,
        damp_percent=a.damp_percent, true_sequential=not a.no_true_sequential, checkpoint_format=a.format,
        algorithm=a.algorithm, calibration_samples=a.samples, calibration_seq_len=a.seq_len))
    device = resolve_device(a.device)
    loaded = load_model(ModelConf(name_or_path=a.model, dtype=a.dtype), device)
    if loaded.checkpoint_method is not None:
        raise SystemExit(f"{a.model} is already quantized ({loaded.checkpoint_method.name})")
    calib = None
    if cfg.needs_calibration():
        calib = data.calibration_batches(loaded.tokenizer, DatasetConf(name=a.dataset), n=a.samples,
                                         seq_len=a.seq_len, seed=a.seed)
    cfg.prepare_model(loaded.model, calib)
    save_dtype = getattr(torch, a.save_dtype) if a.save_dtype else None
    out = save_checkpoint(loaded.model, cfg, a.out, tokenizer=loaded.tokenizer, dtype=save_dtype)
    print(f"saved {out}")
    return out


if __name__ == "__main__":
    main()
