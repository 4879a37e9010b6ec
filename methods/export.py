"""Save a quantized model as a checkpoint directory that our loader (and the format's other readers) load back.

  model.safetensors   each QuantLinear's tensors under `<layer>.<name>` as its method lays them out for the
                      checkpoint format (`checkpoint_tensors`), every other tensor under its usual name; a tied
                      lm_head is written once (the loader re-ties it)
  config.json         the model's config plus `quantization_config` (the method's `checkpoint_config()`)
  tokenizer files and generation_config.json when there are some
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from methods.base import QuantizationConfig, QuantLinear


def checkpoint_state(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors to save: quantized layers in their checkpoint layout, the rest by name, shared tensors once."""
    quant = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    kinds = {type(m.method).__name__ for m in quant.values()}
    if len(kinds) > 1:
        raise ValueError(f"export: layers use different methods {sorted(kinds)}; a checkpoint holds one method")
    state: dict[str, torch.Tensor] = {}
    for name, layer in quant.items():
        for key, t in layer.method.checkpoint_tensors(layer).items():
            state[f"{name}.{key}"] = t.detach().cpu().contiguous()
    seen: set[int] = set()
    for key, t in model.state_dict().items():
        if key.rpartition(".")[0] in quant:
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        state[key] = t.detach().cpu().contiguous()
    return state


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temp directory beside `out` to fill; when the block succeeds it replaces `out` in one rename, so readers
    never see half a directory and a failure leaves none."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(model: nn.Module, qconfig: QuantizationConfig, out_dir: str | os.PathLike,
                    tokenizer: Any = None, dtype: torch.dtype | None = None) -> Path:
    """Write the checkpoint into a temp directory beside `out_dir`, then rename: never half a checkpoint."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    with staged_dir(out) as tmp:
        save_file(checkpoint_state(model, dtype), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        hf = json.loads(model.config.to_json_string(use_diff=False))
        hf["quantization_config"] = qconfig.checkpoint_config()
        (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
        extra = qconfig.extra_config_files()
        for name, content in extra.items():
            (tmp / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out
