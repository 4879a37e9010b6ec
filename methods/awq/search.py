"""AWQ's two searches (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration"), on one group of linear layers and their calibration inputs.

Scale search: input channels that carry large activations matter most, so scale them up before quantizing (their
relative rounding error shrinks) and fold the inverse into whatever produces the input. Per channel s = mean|x|^a
(normalised so sqrt(max s * min s) = 1), a on a grid in [0, 1); keep the a whose Q(W * s) / s gives the inspected
module (the layers' parent, e.g. the attention or the MLP, or the layer itself) the smallest output MSE against
full precision. a = 0 is plain round-to-nearest, so the search never does worse than RTN on its calibration data.

Clip search: per output row and group, shrink the clamp range max|w| (down to max_shrink of it) where that lowers
the group's partial output error on a sample of calibration tokens: outliers cost less clipped than stretching
the grid for every other weight.

Quantization grid: asymmetric min/max RTN per group with fp16 scales, methods.gptq.quantizer's (the `rtn` method's
grid), so AWQ and RTN differ only by what these searches do.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch
from torch import nn

from methods.gptq.quantizer import QuantSpec, group_params, quantize_codes

# Layers never clipped (AutoAWQ): queries and keys feed q k^T, where clipping error is hard to measure per layer.
NO_CLIP = ("q_", "k_", "query", "key", "Wqkv")


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    n_grid: int = 20  # scale exponents a = 0, 1/n_grid, ..., (n_grid - 1)/n_grid
    duo_scaling: bool = False  # AutoAWQ's variant: s = mean|x|^a / mean(|w| / group max|w|)^(1 - a)
    clip: bool = True
    clip_grid: int = 20  # shrink steps of 1/clip_grid ...
    max_shrink: float = 0.5  # ... down to this fraction of max|w|
    clip_tokens: int = 512  # calibration tokens the clip search looks at (evenly strided)


def awq_spec(group_size: int) -> QuantSpec:
    """The 4-bit asymmetric grid of the AWQ layout (zero points in [0, 15], stored as they are)."""
    return QuantSpec(bits=4, group_size=group_size, sym=False, checkpoint_format="gptq_v2")


def _group_width(in_features: int, spec: QuantSpec) -> int:
    return in_features if spec.group_size == -1 else spec.group_size


def _grouped(t: torch.Tensor, gs: int) -> torch.Tensor:
    """t [..., K] -> fp32 [..., G, gs], a short last group padded with zero columns. The grid always spans 0 (its
    range is widened to include it), so zero padding changes no group's scale or zero point and quantizes to 0."""
    pad = -t.shape[-1] % gs
    t = torch.nn.functional.pad(t.float(), (0, pad))
    return t.reshape(*t.shape[:-1], -1, gs)


def fake_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """RTN-quantize then dequantize w [N, K] per group of `spec.group_size` input columns."""
    n, k = w.shape
    groups = _grouped(w, _group_width(k, spec)).reshape(-1, _group_width(k, spec))
    scale, zero = group_params(groups, spec)
    q = quantize_codes(groups, scale[:, None], zero[:, None], spec.maxq)
    return ((q - zero[:, None]) * scale[:, None]).reshape(n, -1)[:, :k].to(w.dtype)


def input_mean(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean |x| per input channel over every token of `xs` ([..., K] each), in fp32."""
    total = sum(x.detach().reshape(-1, x.shape[-1]).abs().float().sum(0) for x in xs)
    return total / sum(x.numel() // x.shape[-1] for x in xs)


def weight_mean(weights: Sequence[torch.Tensor], spec: QuantSpec) -> torch.Tensor:
    """Mean over output rows of |w| / (its group's max |w|), per input channel (duo scaling's weight term)."""
    w = torch.cat([t.detach().float() for t in weights], 0)
    g = _grouped(w.abs(), _group_width(w.shape[1], spec))
    return (g / (g.amax(-1, keepdim=True) + 1e-6)).reshape(w.shape[0], -1)[:, :w.shape[1]].mean(0)


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor | None, ratio: float) -> torch.Tensor:
    """s = x_mean^a (or x_mean^a / w_mean^(1-a)), normalised to sqrt(max * min) = 1; non-finite values -> 1."""
    s = x_mean.pow(ratio) if w_mean is None else x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)
    s = s.clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    return torch.where(torch.isfinite(s), s, torch.ones_like(s))


def output_mse(ref: Sequence[torch.Tensor], out: Sequence[torch.Tensor]) -> float:
    se = sum((a.float() - b.float()).pow(2).sum().item() for a, b in zip(ref, out))
    return se / sum(a.numel() for a in ref)


@dataclasses.dataclass
class ScaleResult:
    scales: torch.Tensor  # fp32 [K]
    ratio: float
    loss: float  # output MSE with the chosen scales
    rtn_loss: float  # output MSE with s = 1, i.e. plain RTN


@torch.no_grad()
def search_scale(layers: Sequence[nn.Linear], inspect: Callable[[], list[torch.Tensor]],
                 xs: Sequence[torch.Tensor], spec: QuantSpec, opts: SearchOptions) -> ScaleResult:
    """Best per-input-channel scales for `layers` (which all read the inputs `xs`). `inspect()` returns the
    inspected module's outputs on the calibration samples with the layers' current weights; the layers' weights
    are restored afterwards."""
    originals = [layer.weight.data.clone() for layer in layers]
    x_mean = input_mean(xs).to(originals[0].device)
    w_mean = weight_mean(originals, spec) if opts.duo_scaling else None
    ref = inspect()

    def loss_with(s: torch.Tensor) -> float:
        for layer, w in zip(layers, originals):
            layer.weight.data = (fake_quantize(w.float() * s, spec) / s).to(w.dtype)
        return output_mse(ref, inspect())

    try:
        candidates = [(i / opts.n_grid, candidate_scales(x_mean, w_mean, i / opts.n_grid))
                      for i in range(opts.n_grid)]
        losses = [loss_with(s) for _, s in candidates]
        # without duo scaling a = 0 gives s = 1: that loss is plain RTN's
        rtn_loss = losses[0] if w_mean is None else loss_with(torch.ones_like(x_mean))
    finally:
        for layer, w in zip(layers, originals):
            layer.weight.data = w
    i = min(range(len(losses)), key=lambda j: losses[j] if math.isfinite(losses[j]) else math.inf)
    if not math.isfinite(losses[i]):
        raise RuntimeError(f"awq: every scale candidate gave a non-finite output error (losses {losses}); the "
                           f"calibration activations overflow in {originals[0].dtype}: calibrate in float32")
    return ScaleResult(scales=candidates[i][1], ratio=candidates[i][0], loss=losses[i], rtn_loss=rtn_loss)


def sample_tokens(xs: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """About n tokens [n', K] evenly strided over all of `xs`."""
    x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs], 0)
    return x[::max(1, x.shape[0] // n)]


@torch.no_grad()
def search_clip(weight: torch.Tensor, x: torch.Tensor, spec: QuantSpec, opts: SearchOptions,
                rows_per_chunk: int = 256) -> torch.Tensor:
    """Best clamp bound per output row and group [N, G] for weight [N, K] on input tokens x [T, K]."""
    n, k = weight.shape
    gs = _group_width(k, spec)
    xg = _grouped(x, gs)  # [T, G, gs]
    best_all = []
    for r in range(0, n, rows_per_chunk):
        w = _grouped(weight[r:r + rows_per_chunk], gs)  # [n', G, gs]
        ref = torch.einsum("tgc,ngc->ntg", xg, w)
        full = w.abs().amax(-1)  # [n', G]
        best, best_err = full.clone(), torch.full_like(full, float("inf"))
        for i in range(int(opts.max_shrink * opts.clip_grid)):
            bound = full * (1 - i / opts.clip_grid)
            clipped = torch.maximum(torch.minimum(w, bound[..., None]), -bound[..., None])
            q = fake_quantize(clipped.reshape(w.shape[0], -1), spec).reshape(w.shape)
            err = (torch.einsum("tgc,ngc->ntg", xg, q) - ref).pow(2).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, bound, best)
        best_all.append(best)
    return torch.cat(best_all, 0)


@torch.no_grad()
def apply_clip(layer: nn.Linear, bound: torch.Tensor, spec: QuantSpec) -> None:
    """Clamp each group of each row of the layer's weight to [-bound, bound] (bound [N, G])."""
    w = layer.weight.data
    n, k = w.shape
    g = _grouped(w, _group_width(k, spec))
    b = bound[..., None].to(g.device)
    layer.weight.data = torch.maximum(torch.minimum(g, b), -b).reshape(n, -1)[:, :k].to(w.dtype)


def clips(name: str) -> bool:
    """Whether the clip search applies to the layer with this (block-relative) name."""
    return not any(p in name for p in NO_CLIP)
