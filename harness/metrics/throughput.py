"""First end-to-end speed figure: prefill and decode tokens/s and peak memory, with a KV cache, greedy decode.

Timed with CUDA events on GPU (perf_counter on CPU) after warm-up; the median of `repeats` runs is reported
with min/max. Speed does not depend on token values, so prompts are random token ids from a fixed seed.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import torch


@dataclass
class ThroughputResult:
    batch_size: int
    prompt_len: int
    gen_len: int
    prefill_s: float  # median seconds for one prefill of batch_size x prompt_len tokens
    decode_s: float  # median seconds for gen_len decode steps
    prefill_tokens_per_s: float
    decode_tokens_per_s: float  # generated tokens (batch_size x gen_len) per second of decode
    time_to_first_token_s: float
    time_per_output_token_s: float
    prefill_s_range: tuple[float, float]
    decode_s_range: tuple[float, float]
    peak_memory_bytes: int
    memory_kind: str  # cuda_max_allocated | process_max_rss
    timer: str
    repeats: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
            torch.cuda.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1e3
        else:
            self.seconds = time.perf_counter() - self.t0


@torch.no_grad()
def _one_run(model, prompt: torch.Tensor, gen_len: int, device: torch.device) -> tuple[float, float]:
    with _Timer(device) as t_prefill:
        out = model(input_ids=prompt, use_cache=True)
        next_tok = out.logits[:, -1].argmax(-1, keepdim=True)
    cache = out.past_key_values
    with _Timer(device) as t_decode:
        for _ in range(gen_len):
            out = model(input_ids=next_tok, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            next_tok = out.logits[:, -1].argmax(-1, keepdim=True)
    return t_prefill.seconds, t_decode.seconds


def throughput(model, vocab_size: int, batch_size: int = 1, prompt_len: int = 128, gen_len: int = 32,
               warmup: int = 1, repeats: int = 3, seed: int = 0) -> ThroughputResult:
    if min(batch_size, prompt_len, gen_len, repeats) < 1 or warmup < 0:
        raise ValueError("throughput: batch_size, prompt_len, gen_len and repeats must be >= 1, warmup >= 0")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab_size, (batch_size, prompt_len), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        _one_run(model, prompt, gen_len, device)
    runs = [_one_run(model, prompt, gen_len, device) for _ in range(repeats)]
    prefill = [r[0] for r in runs]
    decode = [r[1] for r in runs]
    p, d = statistics.median(prefill), statistics.median(decode)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"
    return ThroughputResult(
        batch_size=batch_size, prompt_len=prompt_len, gen_len=gen_len, prefill_s=p, decode_s=d,
        prefill_tokens_per_s=batch_size * prompt_len / p, decode_tokens_per_s=batch_size * gen_len / d,
        time_to_first_token_s=p, time_per_output_token_s=d / gen_len,
        prefill_s_range=(min(prefill), max(prefill)), decode_s_range=(min(decode), max(decode)),
        peak_memory_bytes=int(peak), memory_kind=kind,
        timer="cuda_event" if device.type == "cuda" else "perf_counter", repeats=repeats)
