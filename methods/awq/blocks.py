"""AWQ over a whole HF decoder model, one block at a time (as AutoAWQ does).

Calibration token batches run through the embeddings once (methods.gptq.sequential captures the first block's
inputs). For each block in turn: one full-precision forward records the inputs of its linear layers and of the
modules the scale search inspects (attention, MLP) and the block's output, which becomes the next block's input
(AWQ calibrates every block on full-precision activations). Then: search each group's scales on the
full-precision block, fold them all in, search and apply each layer's clipping on its scaled inputs, and hand
every layer to `install`, which quantizes it and swaps it out.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from methods.awq.scaling import ScaleGroup, apply_scale, scale_groups
from methods.awq.search import SearchOptions, apply_clip, clips, sample_tokens, search_clip, search_scale
from methods.gptq.quantizer import QuantSpec
from methods.gptq.sequential import Sample, as_sample, capture_first_block_inputs, decoder_blocks
from methods.gptq.sequential import _run as run_module


@torch.no_grad()
def capture(block: nn.Module, modules: dict[str, nn.Module],
            samples: Sequence[Sample]) -> tuple[dict[str, list[Sample]], list[torch.Tensor]]:
    """Run the block on every sample; returns what each named module was called with, and the block's outputs."""
    seen: dict[str, list[Sample]] = {name: [] for name in modules}

    def make_hook(name: str):
        def hook(module, args, kwargs):
            seen[name].append(as_sample(args, kwargs))
        return hook

    handles = [m.register_forward_pre_hook(make_hook(n), with_kwargs=True) for n, m in modules.items()]
    try:
        outputs = [run_module(block, s) for s in samples]
    finally:
        for h in handles:
            h.remove()
    silent = sorted(n for n, calls in seen.items() if len(calls) != len(samples))
    if silent:
        raise RuntimeError(f"awq: modules {silent} were not called once per sample in the block's forward pass")
    return seen, outputs


def _search_group(block: nn.Module, group: ScaleGroup, inputs: dict[str, list[Sample]], spec: QuantSpec,
                  opts: SearchOptions):
    layers = [block.get_submodule(n) for n in group.layers]
    target = group.inspect or group.layers[0]
    module = block.get_submodule(target)
    return search_scale(layers, lambda: [run_module(module, s) for s in inputs[target]],
                        [s[0] for s in inputs[group.layers[0]]], spec, opts)


@torch.no_grad()
def awq_blocks(model: nn.Module, spec: QuantSpec, opts: SearchOptions, batches: Sequence[torch.Tensor],
               is_skipped: Callable[[str], bool], install: Callable[[str, nn.Linear], None],
               progress: bool = True) -> dict[str, float]:
    """Scale, clip and `install` every (non-skipped) nn.Linear inside the decoder blocks; the model's norms and
    remaining full-precision layers keep the folded scales. Returns each group's chosen exponent a (for logs)."""
    prefix, blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    samples = capture_first_block_inputs(model, blocks[0], batches, device)
    if not samples:
        raise ValueError("awq: no calibration batches")
    ratios: dict[str, float] = {}
    for b, block in enumerate(tqdm(blocks, desc="awq", disable=not progress, leave=False)):
        linears = {n: m for n, m in block.named_modules()
                   if isinstance(m, nn.Linear) and not is_skipped(f"{prefix}.{b}.{n}")}
        groups = scale_groups(block, linears)
        watched = dict(linears) | {g.inspect: block.get_submodule(g.inspect) for g in groups if g.inspect}
        inputs, outputs = capture(block, watched, samples)
        found = [(g, _search_group(block, g, inputs, spec, opts)) for g in groups]
        scaled_by: dict[str, torch.Tensor] = {}
        for g, res in found:
            apply_scale(block, g, res.scales)
            scaled_by.update({n: res.scales for n in g.layers})
            ratios[f"{prefix}.{b}.{g.layers[0]}"] = res.ratio
        for name, linear in linears.items():
            if opts.clip and clips(name):
                x = sample_tokens([s[0] for s in inputs[name]], opts.clip_tokens)
                if name in scaled_by:  # the layer now reads x / s
                    x = x / scaled_by[name].to(x.dtype)
                apply_clip(linear, search_clip(linear.weight, x, spec, opts), spec)
            install(f"{prefix}.{b}.{name}", linear)
        samples = [(out, s[1], s[2]) for out, s in zip(outputs, samples)]
        del inputs
    return ratios
