"""GPTQ over a whole HF decoder model, one block at a time (as AutoGPTQ does).

Calibration token batches run through the embeddings once; the first block's inputs are captured and then, for
each block in turn: capture the inputs of its linear layers (forward hooks, Hessians accumulated on the fly),
quantize them, put the quantized layers in place (`on_layer`: a QuantLinear under prepare_model), and run the
now-quantized block to produce the next block's inputs. Each block therefore sees the errors of the quantized
blocks before it. Memory: the calibration hidden states of one block boundary, plus one stage's Hessians.

true_sequential=True quantizes a Llama-style block in four stages, each calibrated on inputs that already pass
through the stages quantized before it: q/k/v (one shared Hessian), o_proj, up/gate (shared), down_proj. A
block whose linear layers have other names is quantized in one stage (all inputs from the full-precision block),
which is also what true_sequential=False does. Each stage's forward stops right after its last layer's input is
seen, so the four stages cost about 1.7 block forwards, plus one for the block's output.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from methods.gptq.quantizer import GPTQResult, Hessian, QuantSpec, gptq

# Leaf names of a Llama-style block's linear layers, in the order true_sequential quantizes them.
TRUE_SEQUENTIAL_STAGES = (
    ("q_proj", "k_proj", "v_proj", "qkv_proj"),
    ("o_proj",),
    ("up_proj", "gate_proj", "gate_up_proj"),
    ("down_proj",),
)


class _Stop(Exception):
    """Raised from a hook to end a forward pass early once the wanted inputs are captured."""


Sample = tuple[torch.Tensor, tuple, dict]  # a block's (hidden_states, other positional args, keyword args)


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the decoder blocks (`model.layers` for Llama, `transformer.h` for GPT-2, ...)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n is None or len(module) == n):
            return name, module
    raise ValueError("gptq: cannot find the decoder blocks (an nn.ModuleList of config.num_hidden_layers "
                     "modules); sequential GPTQ needs a decoder-only transformer")


def stages(names: Sequence[str], true_sequential: bool) -> list[list[str]]:
    """Split a block's linear layer names (relative to the block) into quantization stages."""
    if not true_sequential:
        return [list(names)]
    leaf = {n: n.rsplit(".", 1)[-1] for n in names}
    known = {s for stage in TRUE_SEQUENTIAL_STAGES for s in stage}
    unknown = sorted(n for n in names if leaf[n] not in known)
    if unknown:
        warnings.warn(f"gptq: true_sequential knows Llama-style layer names only; {unknown} are not among them, "
                      f"so this block is quantized in one stage")
        return [list(names)]
    return [s for s in ([n for n in names if leaf[n] in stage] for stage in TRUE_SEQUENTIAL_STAGES) if s]


def as_sample(args: tuple, kwargs: dict) -> Sample:
    """What a forward pre-hook (with_kwargs=True) saw, as a replayable Sample: hidden states come positionally
    or as the `hidden_states` keyword."""
    if args:
        return args[0], tuple(args[1:]), dict(kwargs)
    kwargs = dict(kwargs)
    return kwargs.pop("hidden_states"), (), kwargs


def _run(block: nn.Module, sample: Sample):
    hidden, args, kwargs = sample
    out = block(hidden, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def capture_first_block_inputs(model: nn.Module, block: nn.Module, batches: Sequence[torch.Tensor],
                               device: torch.device) -> list[Sample]:
    """Run each token batch until it reaches `block`; keep what the block would have been called with."""
    samples: list[Sample] = []

    def hook(module, args, kwargs):
        samples.append(as_sample(args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in batches:
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return samples


@torch.no_grad()
def stage_hessians(block: nn.Module, layers: dict[str, nn.Linear], samples: Sequence[Sample]) -> dict[str, Hessian]:
    """Hessians of the named layers' inputs over all samples. Layers fed the very same input tensor (q/k/v)
    share one accumulator; each forward stops once every named layer has received its input."""
    hessians: dict[str, Hessian] = {}
    shared_with: dict[str, str] = {}  # layer -> the layer whose accumulator it reuses (found on the first sample)
    seen: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable:
        def hook(module, args):
            x = args[0]
            if name not in hessians and name not in shared_with:
                other = next((o for o, t in seen.items() if t is x and o not in shared_with), None)
                if other is not None:
                    shared_with[name] = other
                else:
                    hessians[name] = Hessian(x.shape[-1], x.device)
            if name not in shared_with:
                hessians[name].add(x)
            seen[name] = x
            if len(seen) == len(layers):
                raise _Stop
        return hook

    handles = [layers[n].register_forward_pre_hook(make_hook(n)) for n in layers]
    try:
        for sample in samples:
            seen.clear()
            try:
                _run(block, sample)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    missing = sorted(set(layers) - set(hessians) - set(shared_with))
    if missing:
        raise RuntimeError(f"gptq: layers {missing} received no input during the block's forward pass")
    return {n: hessians[shared_with.get(n, n)] for n in layers}


def write_dequantized(name: str, linear: nn.Linear, result: GPTQResult) -> None:
    """Default `on_layer`: keep the nn.Linear, holding its dequantized weight from now on."""
    linear.weight.data = result.layer.dequantize().to(device=linear.weight.device, dtype=linear.weight.dtype)


@torch.no_grad()
def quantize_sequential(model: nn.Module, spec: QuantSpec, batches: Sequence[torch.Tensor],
                        is_skipped: Callable[[str], bool], true_sequential: bool = True, progress: bool = True,
                        on_layer: Callable[[str, nn.Linear, GPTQResult], None] = write_dequantized) -> dict[str, float]:
    """GPTQ every (non-skipped) nn.Linear inside the decoder blocks, block by block; returns {name: GPTQ loss}.

    After each stage, `on_layer(qualified name, linear, result)` must make the model compute with the quantized
    layer (the default writes the dequantized weight into the nn.Linear; GPTQConfig.prepare_model swaps in the
    QuantLinear), so the following stages and blocks calibrate on the quantized model. Linear layers outside
    the blocks are left alone."""
    prefix, blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    samples = capture_first_block_inputs(model, blocks[0], batches, device)
    if not samples:
        raise ValueError("gptq: no calibration batches")
    losses: dict[str, float] = {}
    for b, block in enumerate(tqdm(blocks, desc="gptq", disable=not progress, leave=False)):
        names = [n for n, m in block.named_modules()
                 if isinstance(m, nn.Linear) and not is_skipped(f"{prefix}.{b}.{n}")]
        for stage in stages(names, true_sequential):
            layers = {n: block.get_submodule(n) for n in stage}
            hessians = stage_hessians(block, layers, samples)
            for n, layer in layers.items():
                result = gptq(layer.weight, hessians.pop(n).value(), spec)
                on_layer(f"{prefix}.{b}.{n}", layer, result)
                losses[f"{prefix}.{b}.{n}"] = result.loss
        samples = [(_run(block, s), s[1], s[2]) for s in samples]
    return losses
