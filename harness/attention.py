"""Attention implementations a run can give its transformers model (`model.attn_implementation`): transformers'
own (sdpa, eager), or split_kv: our split-KV decode attention (kernels/attention.py) for single-token queries on
CUDA, SDPA for everything else (prefill, CPU, shapes the kernel does not take). Registered with transformers'
attention and mask interfaces under one name, with SDPA's mask, so the model builds the boolean mask the kernel
reads."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from kernels import attention as attn_kernels

SPLIT_KV = "quantbench_split_kv"
IMPLEMENTATIONS = {"sdpa": "sdpa", "eager": "eager", "split_kv": SPLIT_KV}


_WARNED: set[str] = set()
# Attention-function keywords that change the result (transformers passes them for some models: T5-style
# position bias, gpt-oss sink logits, Gemma-2 soft capping): any of them sends the step to SDPA.
MATH_KWARGS = ("position_bias", "s_aux", "sinks", "softcap", "head_mask")


def _why_not(query, key, value, mask, dropout, kwargs) -> str | None:
    """Why a single-token query cannot take the kernel here, or None."""
    if not (query.is_cuda or attn_kernels._interpreted()) or attn_kernels.triton is None:
        return "the kernel needs a CUDA GPU and Triton"
    if dropout != 0.0 or kwargs.get("output_attentions"):
        return "dropout or output_attentions asked for"
    extra = sorted(name for name in MATH_KWARGS if kwargs.get(name) is not None)
    if extra:  # terms the kernel does not add (a bias, sink logits, a soft cap)
        return f"{', '.join(extra)} given"
    return attn_kernels.check_inputs(query, key, value, mask)


def split_kv_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function: [B, H, 1, D] queries go to the split-KV kernel, the rest to SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    why = (None if query.shape[2] != 1 else _why_not(query, key, value, attention_mask, dropout, kwargs))
    if query.shape[2] != 1 or why is not None:
        if why is not None and why not in _WARNED:  # a decode step that should have run the kernel: say so once
            _WARNED.add(why)
            warnings.warn(f"model.attn_implementation=split_kv: decode attention on SDPA ({why})", stacklevel=2)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
    if torch.compiler.is_compiling():  # one opaque op: no graph break around the Triton launches
        return attn_kernels.decode_attention_op(query, key, value, attention_mask, scale), None
    return attn_kernels.decode_attention_triton(query, key, value, attention_mask, scale), None


@functools.cache
def register() -> None:
    """Make SPLIT_KV known to transformers (once per process)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SPLIT_KV, split_kv_attention)
    AttentionMaskInterface.register(SPLIT_KV, sdpa_mask)


def set_attention(model: nn.Module, name: str) -> str:
    """Switch `model` to attention implementation `name` (a key of IMPLEMENTATIONS); returns transformers' name."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation={name!r}; use one of {sorted(IMPLEMENTATIONS)}")
    impl = IMPLEMENTATIONS[name]
    if impl == SPLIT_KV:
        register()
    model.set_attn_implementation(impl)
    return impl
