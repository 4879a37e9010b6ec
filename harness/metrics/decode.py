"""Greedy decoding over a static KV cache, one token per step: eager, CUDA-graph replay, or torch.compile (on
CUDA, the compiled step replayed from a CUDA graph).

The decoder owns transformers' StaticCache (sized prompt_len + gen_len) and fixed device buffers for the next
input ids, their positions, a step counter and the generated tokens. A step runs the model on one token per
sequence, takes the argmax and writes it back into those buffers, all on the device and in place (gpt-fast
style), so the step can be captured once in a torch.cuda.CUDAGraph and replayed per token: the timing then
measures kernels, not Python. Prefill stays eager (one forward over the prompt, first token by argmax).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from kernels.launch import programmatic_launch

MODES = ("auto", "cuda_graph", "compile", "eager")


class DecodeCheckError(RuntimeError):
    """Replayed (graph or compiled) decode steps disagree with the same steps run eagerly."""


def resolve_mode(mode: str, device: torch.device) -> str:
    """auto -> cuda_graph on CUDA, eager elsewhere; cuda_graph without CUDA is an error."""
    if mode not in MODES:
        raise ValueError(f"decode_mode={mode!r} is not supported; use one of {list(MODES)}")
    if mode == "auto":
        return "cuda_graph" if device.type == "cuda" else "eager"
    if mode == "cuda_graph" and device.type != "cuda":
        raise ValueError(f"decode_mode=cuda_graph needs a CUDA device (the model is on {device}); use auto or eager")
    return mode


def check_pdl(device: torch.device) -> None:
    """Programmatic dependent launch (PDL) needs an sm_90+ GPU and an Inductor that emits it."""
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    if cap is None or cap[0] < 9:
        raise ValueError(f"pdl=true needs a CUDA GPU of compute capability >= 9.0 (Hopper or newer); the model is on "
                         f"{device}{f' (sm_{cap[0]}{cap[1]})' if cap else ''}: set pdl=false")
    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config.triton, "enable_pdl"):
        raise ValueError(f"pdl=true needs torch._inductor.config.triton.enable_pdl, which torch {torch.__version__} "
                         f"lacks: set pdl=false")


@contextlib.contextmanager
def pdl_scope(enabled: bool):
    """Inductor's Triton kernels and ours (kernels.launch) launch with PDL within the block when `enabled`."""
    if not enabled:
        yield
        return
    import torch._inductor.config as inductor_config

    inductor = os.environ.get("QUANTBENCH_PDL_INDUCTOR", "1") != "0"  # a diagnostic switch (kernels.launch)
    with inductor_config.patch({"triton.enable_pdl": inductor}), programmatic_launch(True):
        yield


def _forward_params(model: nn.Module) -> set[str]:
    return set(inspect.signature(type(model).forward).parameters)  # follows functools.wraps to the real forward


def cache_kwarg(model: nn.Module) -> str:
    """The forward's cache argument: `cache` (transformers >= 5.2x) or `past_key_values` (5.17 and older)."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def cache_bytes(cache) -> int:
    """Bytes the cache's allocated key/value tensors occupy."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _shared_length_update(layer, advance: bool):
    """StaticLayer.update (transformers 5.x) reading the write position from the cache's shared length counter,
    which only the last layer (`advance`) moves on."""

    def update(key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        position = torch.arange(n, device=layer.device) + layer.cumulative_length
        if advance:
            layer.cumulative_length.add_(n)
        layer.keys.index_copy_(2, position, key_states)
        layer.values.index_copy_(2, position, value_states)
        return layer.keys, layer.values

    return update


def share_cache_length(cache) -> bool:
    """Give every layer of an initialized StaticCache (after a prefill) layer 0's length counter, advanced once per
    forward by the last layer, instead of one counter per layer each advanced by its own update. The layers write
    where they wrote before (each reads the counter before the last layer moves it), and a decode step runs one
    counter update instead of one small kernel per layer (32 for a Llama-2-7B, about 40 us of an H100 decode
    step: transformers' bookkeeping, not the model's kernels). Applies only to plain full-attention StaticLayers
    with a tensor counter (transformers 5.x); returns whether it did."""
    from transformers.cache_utils import StaticLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not StaticLayer or not layer.is_initialized
                         or not isinstance(getattr(layer, "cumulative_length", None), torch.Tensor)
                         for layer in layers):
        return False
    shared = layers[0].cumulative_length
    for i, layer in enumerate(layers):
        layer.cumulative_length = shared
        layer.update = _shared_length_update(layer, advance=i == len(layers) - 1)
    return True


class StaticDecoder:
    """Prefill + greedy decode of `batch_size` sequences over one static cache of prompt_len + gen_len tokens.
    shared_length: after the first prefill the cache's layers share one length counter (`share_cache_length`)."""

    def __init__(self, model: nn.Module, batch_size: int, prompt_len: int, gen_len: int, shared_length: bool = True):
        from transformers import StaticCache

        self.model, self.batch_size, self.prompt_len, self.gen_len = model, batch_size, prompt_len, gen_len
        self.device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=prompt_len + gen_len)
        self.shared_length = shared_length  # asked for; `cache_counter` says what applied
        self.cache_counter = "per_layer"  # or "shared" once share_cache_length applied
        params = _forward_params(model)
        self._cache_kw = {cache_kwarg(model): self.cache}
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        long = dict(dtype=torch.long, device=self.device)
        self.ids = torch.zeros((batch_size, 1), **long)  # next input token of each sequence
        self.pos = torch.zeros((batch_size, 1), **long)  # its position
        self.step_idx = torch.zeros((1,), **long)  # decode steps run since the prefill
        self.tokens = torch.zeros((batch_size, gen_len), **long)  # token produced by each step
        self.logits: torch.Tensor | None = None  # logits of the last step ([batch, 1, vocab])
        self.mode = "eager"
        self.pdl = False  # compile(pdl=True): the compiled step's kernels launch with PDL
        self._graph: torch.cuda.CUDAGraph | None = None
        self._compiled = None
        self.compile_stats: dict | None = None  # compile(): dynamo graphs and graph breaks of the decode step
        self.prefill_compile_stats: dict | None = None  # the same for capture_prefill(mode="compile")

    def reset(self) -> None:
        """Empty the cache (in place: its tensors keep their addresses)."""
        self.cache.reset()

    @torch.no_grad()
    def prefill(self, prompt: torch.Tensor, reset: bool = True) -> torch.Tensor:
        """Run the prompt [batch, prompt_len] (into an emptied cache unless reset=False: the caller emptied it),
        set up the first decode input; returns it."""
        if tuple(prompt.shape) != (self.batch_size, self.prompt_len):
            raise ValueError(f"prompt {tuple(prompt.shape)} != ({self.batch_size}, {self.prompt_len})")
        if reset:
            self.reset()
        positions = torch.arange(self.prompt_len, device=self.device).expand(self.batch_size, -1)
        out = self.model(input_ids=prompt, position_ids=positions, use_cache=True, **self._cache_kw, **self._keep)
        if self.shared_length and self.cache_counter == "per_layer" and share_cache_length(self.cache):
            self.cache_counter = "shared"
        self.prefill_logits = out.logits[:, -1]
        first = self.prefill_logits.argmax(-1, keepdim=True)
        self.ids.copy_(first)
        self.pos.fill_(self.prompt_len)
        self.step_idx.zero_()
        return first

    def _step(self) -> torch.Tensor:
        """One decode step, entirely on fixed buffers (what the graph captures)."""
        out = self.model(input_ids=self.ids, position_ids=self.pos, use_cache=True, **self._cache_kw)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        self.tokens.index_copy_(1, self.step_idx, nxt)
        self.ids.copy_(nxt)
        self.pos.add_(1)
        self.step_idx.add_(1)
        return out.logits

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Run one decode step in the decoder's mode; returns that step's logits (a buffer the next step reuses)."""
        if self._graph is not None:
            self._graph.replay()
            return self.logits
        if self._compiled is not None:
            with programmatic_launch(self.pdl):
                self.logits = self._compiled()
        else:
            self.logits = self._step()
        return self.logits

    @torch.no_grad()
    def capture(self, prompt: torch.Tensor) -> None:
        """Capture one decode step in a CUDA graph. The cache tensors must exist first (allocated by a prefill), and
        the step runs once on a side stream before capture (lazy initialisation, kernel compilation)."""
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.prefill(prompt)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._step()
        self._graph, self.mode = graph, "cuda_graph"

    @torch.no_grad()
    def capture_prefill(self, prompt: torch.Tensor, mode: str = "cuda_graph") -> Callable[[], None]:
        """The prefill of `prompt` (copied into a buffer it reads) as one replayable call, checked against the eager
        prefill's last-position logits: mode cuda_graph captures it in a CUDA graph; compile torch.compiles it
        (Inductor fuses the norms, rotary and residual adds between the GEMMs) and, on CUDA, captures the compiled
        prefill too. Call the result after `reset()`: the prefill's kernels run without Python, as a serving
        engine's captured prefill does."""
        if mode not in ("cuda_graph", "compile"):
            raise ValueError(f"capture_prefill: mode={mode!r}; use 'cuda_graph' or 'compile'")
        if mode == "cuda_graph" and self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self._prompt_buf = prompt.clone()
        eager = self.prefill(self._prompt_buf).clone(), self.prefill_logits.float().clone()
        # The model's own noise, as for decode (eager_reference): the first rows prefilled at another batch size.
        sub, rows = self._noise_decoder(prompt, 1)
        noise = _rel_rms(sub.prefill_logits[:len(rows)].float(), eager[1][rows])
        del sub

        def body():
            self.prefill(self._prompt_buf, reset=False)

        if mode == "compile":
            _fresh_dynamo(self._prompt_buf, self.ids, self.pos, self.step_idx)
            body = torch.compile(body, dynamic=False)
            for _ in range(2):
                self.reset()
                body()
            self.prefill_compile_stats = _dynamo_stats()
        run = body
        if self.device.type == "cuda":
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.reset()
                body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.reset()
            with torch.cuda.graph(graph):
                body()
            run = graph.replay
        self.reset()
        run()
        rel = _rel_rms(self.prefill_logits.float(), eager[1])
        limit = max(CHECK_REL_TOL[mode], NOISE_FACTOR[mode] * noise)
        if rel > limit:
            raise DecodeCheckError(f"{mode} prefill: last-position logits differ from eager by {rel:.3g} (relative "
                                   f"RMS), above the limit {limit:.3g} (the model's own kernel-order noise: "
                                   f"{noise:.3g}): the replayed prefill does not compute what the model does")
        self.prefill_check = {"rel_rms_diff": rel, "noise_rel_rms": noise, "rel_rms_limit": limit,
                              "first_tokens_equal": bool(torch.equal(self.ids, eager[0]))}
        return run

    @torch.no_grad()
    def compile(self, prompt: torch.Tensor, pdl: bool = False) -> None:
        """torch.compile the decode step (Inductor fuses what lies between the GEMMs; quantized matmuls stay one
        op each) and warm it up; on CUDA the compiled step is then captured in a CUDA graph like `capture`, so
        replays run its kernels without Python (our own capture rather than mode=reduce-overhead, whose graphs
        are skipped silently when it finds a reason). pdl: Inductor's kernels and ours launch with programmatic
        dependent launch (`check_pdl`), as vLLM runs its full CUDA graphs on Hopper."""
        if pdl:
            check_pdl(self.device)
        _fresh_dynamo(self.ids, self.pos, self.step_idx, self.tokens)
        self._compiled = torch.compile(self._step, dynamic=False)
        self.mode, self.pdl = "compile", pdl
        with pdl_scope(pdl):
            for _ in range(2):
                self.prefill(prompt)
                for _ in range(min(3, self.gen_len)):
                    self.step()
            self.compile_stats = _dynamo_stats()
            if self.device.type == "cuda":
                self.prefill(prompt)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.logits = self._compiled()
                self._graph = graph

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Prefill then `steps` (default gen_len) decode steps; returns the tokens [batch, steps]."""
        steps = self.gen_len if steps is None else steps
        if not 0 <= steps <= self.gen_len:
            raise ValueError(f"steps={steps} must lie in [0, gen_len={self.gen_len}] (the cache holds no more)")
        self.prefill(prompt)
        for _ in range(steps):
            self.step()
        return self.tokens[:, :steps].clone()

    def _noise_decoder(self, prompt: torch.Tensor, gen_len: int) -> tuple["StaticDecoder", list[int]]:
        """A decoder of the floor_rows sequences at another batch size (noise_prompt), prefilled eagerly; and
        those rows, which lead its batch."""
        rows = floor_rows(self.batch_size)
        sub_prompt = noise_prompt(prompt, rows)
        sub = StaticDecoder(self.model, len(sub_prompt), self.prompt_len, gen_len)
        sub.prefill(sub_prompt)
        return sub, rows

    @torch.no_grad()
    def eager_reference(self, prompt: torch.Tensor, steps: int) -> "EagerReference":
        """Logits and tokens of `steps` eager greedy steps from `prompt`, for check_against, and the same steps of
        the first rows decoded eagerly at another batch size (`floor_rows`). Take it before the decoder is
        captured or compiled: eager steps run between a capture and its replays were seen to change what the
        replays compute (results/h100/README.md), so a reference taken then disturbs the check."""
        steps = min(steps, self.gen_len)
        if steps < 1:
            return EagerReference([], self.tokens[:, :0].clone(), [], None)
        self.prefill(prompt)
        logits = [self._step()[:, -1].float().clone() for _ in range(steps)]
        tokens = self.tokens[:, :steps].clone()
        # The same sequences at another batch size run other GEMM/attention kernels (other tiles, other
        # summation orders): how far eager logits move under that alone is the model's own kernel-order noise.
        sub, rows = self._noise_decoder(prompt, self.gen_len)
        sub_logits = [sub._step()[:len(rows), -1].float().clone() for _ in range(steps)]
        sub_tokens = sub.tokens[:len(rows), :steps].clone()
        del sub
        return EagerReference(logits, tokens, sub_logits, sub_tokens)

    @torch.no_grad()
    def check_against(self, reference: "EagerReference", prompt: torch.Tensor) -> dict:
        """Run as many steps as `reference` (eager_reference) holds in the decoder's mode, from the same prompt,
        and compare with the eager steps.

        Compared up to and including the first step where the tokens part (kernels that sum in another order
        may part them at a near-tie): the relative RMS difference of the logits, ||replay - eager|| / ||eager|| of
        each sequence, the largest.
        It must stay within CHECK_REL_TOL[mode] or, where the model's own kernel-order noise is larger, within
        NOISE_FACTOR[mode] x that noise: the same difference measured between eager steps of the same sequences at
        another batch size (`eager_reference`). Quantized activations (FP8's dynamic scales) amplify a last-bit
        change into other roundings in every later layer, so their noise is far above bf16's; a replay that
        computes something else (a stale input, a frozen position) differs by ~100%. Raises DecodeCheckError
        otherwise."""
        steps = len(reference.logits)
        if self.mode == "eager" or steps < 1:
            return {"steps": 0, "tokens_equal": True, "first_divergent_step": None, "max_abs_logit_diff": 0.0}
        self.prefill(prompt)
        got = [self.step()[:, -1].float().clone() for _ in range(steps)]
        got_tokens = self.tokens[:, :steps].clone()
        diverge = _first_divergence(reference.tokens, got_tokens)
        upto = steps if diverge is None else diverge + 1
        ref = reference.logits[:upto]
        rel = max(_rel_rms(g, r) for g, r in zip(got[:upto], ref))
        result = {"steps": steps, "tokens_equal": diverge is None, "first_divergent_step": diverge,
                  "max_abs_logit_diff": max(float((g - r).abs().max()) for g, r in zip(got[:upto], ref)),
                  "logit_scale": max(float(r.abs().max()) for r in ref), "rel_rms_diff": rel}
        noise = None
        if reference.sub_logits:
            rows = floor_rows(self.batch_size)
            own = [r[rows] for r in reference.logits]
            d = _first_divergence(reference.tokens[rows], reference.sub_tokens)
            n = steps if d is None else d + 1
            noise = max(_rel_rms(s, o) for s, o in zip(reference.sub_logits[:n], own[:n]))
            result |= {"noise_rel_rms": noise, "noise_batch_size": len(rows) + (len(rows) == self.batch_size)}
        limit = max(CHECK_REL_TOL[self.mode], NOISE_FACTOR[self.mode] * (noise or 0.0))
        result["rel_rms_limit"] = limit
        if rel > limit:
            raise DecodeCheckError(
                f"{self.mode} decode at batch {self.batch_size}: logits differ from eager by {rel:.3g} (relative RMS; "
                f"max |diff| {result['max_abs_logit_diff']:.4g} at a logit scale of {result['logit_scale']:.4g}) "
                f"within {upto} step(s), above the limit {limit:.3g} (the model's own kernel-order noise: "
                f"{'unmeasured' if noise is None else f'{noise:.3g}'}): the replayed step does not compute what "
                f"the model does")
        return result


# A replayed step passes within this relative RMS difference of the logits, or NOISE_FACTOR x the model's own
# kernel-order noise where that is larger (check_against), per decode mode. A CUDA graph replays eager's kernels;
# a compiled step computes another rounding: Inductor fuses bf16 pointwise chains (norms, rotary, residual adds)
# into kernels that keep fp32 between ops and round once, where eager rounds after each op. On the H100
# (Llama-2-7B shape, git d8f60db) that put compiled bf16 logits 5.7% from eager at batch 1 against a batch-size
# noise of 2.0%, and FP8's 2.6x its noise; a replay computing something else differs by ~100%.
CHECK_REL_TOL = {"cuda_graph": 0.05, "compile": 0.10}
NOISE_FACTOR = {"cuda_graph": 2.0, "compile": 3.0}


class EagerReference(NamedTuple):
    logits: list[torch.Tensor]  # per step, [batch, vocab]
    tokens: torch.Tensor  # [batch, steps]
    sub_logits: list[torch.Tensor]  # the floor_rows sequences decoded eagerly at another batch size
    sub_tokens: torch.Tensor | None


FLOOR_MAX_ROWS = 8  # the noise decoder's batch: small, so its KV cache costs little next to the point's


def floor_rows(batch_size: int) -> list[int]:
    """Rows decoded at another batch size to measure kernel-order noise: the first half of the batch (at most
    FLOOR_MAX_ROWS); at batch 1 the one sequence, decoded beside another (a duplicate would leave per-tensor
    activation scales, FP8's, unchanged and hide the noise a batch's composition brings)."""
    return list(range(min(FLOOR_MAX_ROWS, max(1, batch_size // 2))))


def _fresh_dynamo(*static_buffers: torch.Tensor) -> None:
    """A fresh dynamo cache and counters before each compile: a sweep builds one decoder per (method, batch size)
    in one process, and past dynamo's recompile limit (8) it would run the step eagerly without an error. The
    buffers a compiled step reads and writes in place keep their addresses (for the CUDA graph around it)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    for buf in static_buffers:
        torch._dynamo.mark_static_address(buf)


def _dynamo_stats() -> dict:
    """Graphs and graph breaks dynamo made since _fresh_dynamo."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def noise_prompt(prompt: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """The batch that measures the noise of `rows`: those rows alone where that is another batch size, else (batch
    1) beside another sequence, the first one's prompt rolled by a token."""
    sub = prompt[rows]
    return torch.cat([sub, sub.roll(1, dims=1)]) if len(rows) == len(prompt) else sub


def _first_divergence(a: torch.Tensor, b: torch.Tensor) -> int | None:
    same = (a == b).all(0)
    return None if bool(same.all()) else int((~same).nonzero()[0])


def _rel_rms(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest relative RMS difference of one sequence's logits ([batch, vocab]: per row, so one wrong row in a
    large batch is not averaged away)."""
    return float(((got - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-12)).max())
