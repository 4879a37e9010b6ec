"""End-to-end speed as a serving engine sees it: prefill and decode tokens/s, time to first token, time per output
token, end-to-end latency, peak and weight memory, per batch size.

Each point (batch size b, prompt_len P, gen_len G) runs, after warm-up, `repeats` times: an eager prefill of
b x P tokens over a static KV cache of P + G tokens (its time is the time to first token), then G greedy decode
steps of b tokens each (harness/metrics/decode.py: CUDA-graph replays on GPU by default, so kernels are timed,
not Python). Reported: the median with min and max over the repeats. Timed with CUDA events on GPU,
perf_counter on CPU. Speed does not depend on token values: prompts are random ids from a fixed seed.

`prefill_lens` adds prefill-only points (batch `prefill_batch_size`) at long prompts whose KV cache would not fit
at the large decode batch sizes (e.g. 2048 tokens at batch 1); `prefill_mode` auto replays them from a CUDA graph on
CUDA (checked against the eager prefill's logits), so a quantized model's extra kernel launches are not timed as
Python overhead.

Record (`metrics.throughput`): `points`, one row per batch size with batch_size, prompt_len, gen_len,
prefill_tokens (b x P), decode_tokens (b x G), prefill_s / decode_s / e2e_latency_s (median, with _min, _max and
_runs), prefill_tokens_per_s, decode_tokens_per_s, time_to_first_token_s, time_per_output_token_s,
peak_memory_bytes, kv_cache_bytes, decode_mode, decode_mode_reason, pdl (programmatic dependent launch of the
compiled step's kernels), kv_cache_counter (shared: the cache's layers share one length counter, advanced once a
step, `decode.share_cache_length`; per_layer: transformers' own), decode_check (and step_profile with
profile_steps > 0: harness/metrics/step_profile.py); `prefill_points`, the same
prefill fields; run-wide decode_mode, decode_mode_reason, prefill_mode, kv_cache, weight_memory_bytes,
memory_kind, timer, warmup, repeats; and LEGACY_KEYS copied from the first point.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from harness.metrics.decode import StaticDecoder, cache_bytes, check_pdl, resolve_mode
from harness.metrics.step_profile import profile_step
from kernels.launch import programmatic_launch

# Prefill-only points: auto (cuda_graph on CUDA, eager on CPU), cuda_graph (replayed), compile (torch.compile; on
# CUDA replayed from a CUDA graph), eager. The prefill of each decode point (its time to first token) is eager.
PREFILL_MODES = ("auto", "cuda_graph", "compile", "eager")
# Top-level keys copied from the first point, as records had them before points existed (report, compare).
LEGACY_KEYS = ("batch_size", "prompt_len", "gen_len", "prefill_s", "decode_s", "prefill_tokens_per_s",
               "decode_tokens_per_s", "time_to_first_token_s", "time_per_output_token_s", "e2e_latency_s",
               "peak_memory_bytes")


@dataclass
class ThroughputResult:
    points: list[dict]  # one row per batch size (decode_point)
    prefill_points: list[dict]  # prefill-only rows (prefill_point)
    decode_mode: str  # what decode ran as: cuda_graph | compile | eager
    decode_mode_reason: str
    prefill_mode: str
    kv_cache: str
    weight_memory_bytes: int
    memory_kind: str  # cuda_max_allocated | process_max_rss
    timer: str  # cuda_event | perf_counter
    warmup: int
    repeats: int

    def as_dict(self) -> dict:
        d = asdict(self)
        first = self.points[0] if self.points else {}
        return {k: first[k] for k in LEGACY_KEYS if k in first} | d


def _stats(name: str, xs: list[float]) -> dict:
    return {name: statistics.median(xs), f"{name}_min": min(xs), f"{name}_max": max(xs), f"{name}_runs": list(xs)}


class _Clock:
    """Time marks: CUDA events on GPU (read after one sync at the end of a run), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, a, b) -> float:
        if not self.cuda:
            return b - a
        b.synchronize()
        return a.elapsed_time(b) / 1e3


def weight_memory_bytes(model: nn.Module) -> int:
    from harness.models import describe

    return describe(model)["weight_bytes"]


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux reports KiB


def _prompt(vocab_size: int, batch: int, length: int, seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, length), generator=gen).to(device)


def _setup_mode(dec: StaticDecoder, mode: str, requested: str, prompt: torch.Tensor,
                pdl: bool = False) -> tuple[str, str]:
    """Put the decoder in `mode`; under decode_mode=auto a failed capture falls back to eager, saying why."""
    if mode == "eager":
        return "eager", ("auto: eager on CPU" if requested == "auto" else "requested")
    try:
        dec.capture(prompt) if mode == "cuda_graph" else dec.compile(prompt, pdl=pdl)
    except Exception as e:
        if requested != "auto":
            raise RuntimeError(f"decode_mode={mode} failed: {type(e).__name__}: {e}; use decode_mode=eager (or "
                               f"auto, which falls back to eager and records why)") from e
        dec._graph = dec._compiled = None
        dec.mode = "eager"
        return "eager", f"auto: {mode} failed ({type(e).__name__}: {e}); fell back to eager"
    return mode, "auto: cuda_graph on CUDA" if requested == "auto" else "requested"


def decode_point(model: nn.Module, vocab_size: int, batch_size: int, prompt_len: int, gen_len: int, warmup: int,
                 repeats: int, seed: int, mode: str, requested: str, check_steps: int, profile_steps: int = 0,
                 pdl: bool = False) -> dict:
    """Prefill + decode timings of one batch size (module docstring)."""
    device = next(model.parameters()).device
    _reset_memory(device)
    prompt = _prompt(vocab_size, batch_size, prompt_len, seed, device)
    dec = StaticDecoder(model, batch_size, prompt_len, gen_len)
    reference = dec.eager_reference(prompt, check_steps if mode != "eager" else 0)  # before any capture
    used, reason = _setup_mode(dec, mode, requested, prompt, pdl)
    check = dec.check_against(reference, prompt)
    del reference
    _reset_memory(device)  # the peak is the timed runs': not the check's second decoder (its own KV cache)
    clock = _Clock(device)
    prefill, decode, e2e = [], [], []
    for i in range(warmup + repeats):
        dec.reset()  # emptying the cache is not part of the prefill
        t0 = clock.mark()
        dec.prefill(prompt, reset=False)
        t1 = clock.mark()
        for _ in range(gen_len):
            dec.step()
        t2 = clock.mark()
        if i >= warmup:
            prefill.append(clock.seconds(t0, t1))
            decode.append(clock.seconds(t1, t2))
            e2e.append(clock.seconds(t0, t2))
    steps = int(dec.step_idx)  # counted on the device by the (replayed) step itself
    if steps != gen_len:
        raise RuntimeError(f"decode ran {steps} steps, expected gen_len={gen_len}")
    row = {"batch_size": batch_size, "prompt_len": prompt_len, "gen_len": gen_len,
           "prefill_tokens": batch_size * prompt_len, "decode_tokens": batch_size * steps,
           **_stats("prefill_s", prefill), **_stats("decode_s", decode), **_stats("e2e_latency_s", e2e)}
    row |= {"prefill_tokens_per_s": row["prefill_tokens"] / row["prefill_s"],
            "decode_tokens_per_s": row["decode_tokens"] / row["decode_s"],
            "time_to_first_token_s": row["prefill_s"], "time_per_output_token_s": row["decode_s"] / gen_len,
            "peak_memory_bytes": _peak_memory(device), "kv_cache_bytes": cache_bytes(dec.cache),
            "decode_mode": used, "decode_mode_reason": reason, "pdl": dec.pdl, "kv_cache_counter": dec.cache_counter,
            "decode_check": check}
    if dec.compile_stats is not None:
        row["compile"] = dec.compile_stats
    if profile_steps:  # the step as timed (compiled, or eager: a CUDA graph replays the eager step's kernels)
        dec.prefill(prompt)
        step = dec._compiled if dec._compiled is not None else dec._step
        with torch.no_grad(), programmatic_launch(dec.pdl):
            step()  # one unprofiled step (lazy initialisation)
            row["step_profile"] = profile_step(step, min(profile_steps, gen_len - 1), device)
    del dec
    return row


def prefill_point(model: nn.Module, vocab_size: int, batch_size: int, prompt_len: int, warmup: int, repeats: int,
                  seed: int, mode: str = "eager", requested: str = "eager") -> dict:
    """Prefill-only timings (time to first token) of batch_size x prompt_len tokens over a static cache; mode
    cuda_graph replays the prefill from a CUDA graph, compile runs it torch.compiled (replayed from a CUDA graph on
    CUDA), each checked against eager first, so kernels, not Python launches, are timed (quantized layers launch
    more, smaller kernels than F.linear)."""
    device = next(model.parameters()).device
    _reset_memory(device)
    prompt = _prompt(vocab_size, batch_size, prompt_len, seed, device)
    dec = StaticDecoder(model, batch_size, prompt_len, 1)
    replay, reason = None, "requested" if requested == mode else f"auto: {mode}"
    if mode != "eager":
        try:
            replay = dec.capture_prefill(prompt, mode)
        except Exception as e:
            if requested != "auto":
                raise RuntimeError(f"prefill_mode={mode} failed: {type(e).__name__}: {e}; use prefill_mode=eager "
                                   f"(or auto, which falls back to eager and records why)") from e
            mode, reason = "eager", f"auto: {mode} failed ({type(e).__name__}: {e}); fell back to eager"
    clock = _Clock(device)
    times = []
    for i in range(warmup + repeats):
        dec.reset()
        t0 = clock.mark()
        replay() if replay is not None else dec.prefill(prompt, reset=False)
        t1 = clock.mark()
        if i >= warmup:
            times.append(clock.seconds(t0, t1))
    row = {"batch_size": batch_size, "prompt_len": prompt_len, "prefill_tokens": batch_size * prompt_len,
           **_stats("prefill_s", times)}
    row |= {"prefill_tokens_per_s": row["prefill_tokens"] / row["prefill_s"],
            "time_to_first_token_s": row["prefill_s"], "peak_memory_bytes": _peak_memory(device),
            "kv_cache_bytes": cache_bytes(dec.cache), "prefill_mode": mode,
            "prefill_mode_reason": reason}
    if replay is not None:
        row["prefill_check"] = dec.prefill_check
    if dec.prefill_compile_stats is not None:
        row["compile"] = dec.prefill_compile_stats
    del dec, replay
    return row


def _positive_ints(name: str, values: Sequence[int], allow_empty: bool = False) -> list[int]:
    values = [values] if isinstance(values, int) else list(values)
    if (not values and not allow_empty) or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"throughput: {name}={values} must be a {'' if allow_empty else 'non-empty '}list of "
                         f"positive integers")
    return values


def throughput(model: nn.Module, vocab_size: int, batch_sizes: Sequence[int] | int = (1,), prompt_len: int = 128,
               gen_len: int = 32, warmup: int = 1, repeats: int = 3, seed: int = 0, decode_mode: str = "auto",
               check_steps: int = 4, prefill_lens: Sequence[int] = (), prefill_batch_size: int = 1,
               prefill_mode: str = "eager", profile_steps: int = 0, pdl: bool = False) -> ThroughputResult:
    batch_sizes = _positive_ints("batch_sizes", batch_sizes)
    prefill_lens = _positive_ints("prefill_lens", prefill_lens, allow_empty=True)
    if min(prompt_len, gen_len, repeats, prefill_batch_size) < 1 or min(warmup, check_steps, profile_steps) < 0:
        raise ValueError("throughput: prompt_len, gen_len, repeats and prefill_batch_size must be >= 1, warmup, "
                         "check_steps and profile_steps >= 0")
    if profile_steps and gen_len < 2:
        raise ValueError("throughput: profile_steps needs gen_len >= 2 (one warm-up step, then the profiled ones)")
    device = next(model.parameters()).device
    mode = resolve_mode(decode_mode, device)
    if pdl:
        if mode != "compile":
            raise ValueError(f"throughput: pdl=true applies to the compiled decode step (Inductor's kernels and ours "
                             f"launch with PDL); decode_mode={decode_mode!r}: use decode_mode=compile or pdl=false")
        check_pdl(device)
    if prefill_mode not in PREFILL_MODES:
        raise ValueError(f"throughput: prefill_mode={prefill_mode!r}; use one of {PREFILL_MODES}")
    if prefill_mode == "cuda_graph" and device.type != "cuda":
        raise ValueError("throughput: prefill_mode=cuda_graph needs a CUDA device; use prefill_mode=auto or eager")
    pmode = prefill_mode if prefill_mode != "auto" else "cuda_graph" if device.type == "cuda" else "eager"
    was_training = model.training
    model.eval()
    try:
        points = [decode_point(model, vocab_size, b, prompt_len, gen_len, warmup, repeats, seed, mode, decode_mode,
                               check_steps, profile_steps, pdl) for b in batch_sizes]
        prefills = [prefill_point(model, vocab_size, prefill_batch_size, p, warmup, repeats, seed, pmode,
                                  prefill_mode)
                    for p in prefill_lens]
    finally:
        model.train(was_training)
        _reset_memory(device)
    used = sorted({p["decode_mode"] for p in points})
    return ThroughputResult(
        points=points, prefill_points=prefills, decode_mode="+".join(used),
        decode_mode_reason="; ".join(sorted({p["decode_mode_reason"] for p in points})),
        prefill_mode="+".join(sorted({p["prefill_mode"] for p in prefills})) or pmode,
        kv_cache="static", weight_memory_bytes=weight_memory_bytes(model),
        memory_kind="cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        timer="cuda_event" if device.type == "cuda" else "perf_counter", warmup=warmup, repeats=repeats)
