"""Perplexity with the protocol of the GPTQ/AWQ papers, generalised to strided windows.

The corpus is joined and tokenized once. Windows of `seq_len` tokens start every `stride` tokens; a window
scores only the tokens no earlier window scored (all of it but its first token when stride == seq_len, the
papers' non-overlapping setting; the trailing partial window is dropped, as there). PPL = exp(total NLL /
scored tokens). With equal windows this equals the GPTQ code's exp(mean over windows of mean window NLL).
lm-eval's `wikitext` task instead scores each article separately with rolling windows and reports word and
byte perplexity, so its token perplexity differs slightly; tests/test_lm_eval.py pins how much (1 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    scored_tokens: int
    windows: int
    corpus_tokens: int
    seq_len: int
    stride: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def window_starts(n_tokens: int, seq_len: int, stride: int) -> list[int]:
    """Start offsets of full windows; the remainder that does not fill a window is dropped."""
    if seq_len < 2 or stride < 1 or stride > seq_len:
        raise ValueError(f"need seq_len >= 2 and 1 <= stride <= seq_len, got seq_len={seq_len}, stride={stride}")
    if n_tokens < seq_len:
        raise ValueError(f"corpus has {n_tokens} tokens, fewer than one window of seq_len={seq_len}; "
                         "lower bench.perplexity.seq_len or use a larger dataset")
    return list(range(0, n_tokens - seq_len + 1, stride))


@torch.no_grad()
def perplexity(model, input_ids: torch.Tensor, seq_len: int = 2048, stride: int | None = None,
               batch_size: int = 1, max_windows: int | None = None, progress: bool = True) -> PerplexityResult:
    """Perplexity of `model` on the 1-D token tensor `input_ids`."""
    stride = stride or seq_len
    ids = input_ids.reshape(-1)
    starts = window_starts(ids.numel(), seq_len, stride)
    if max_windows is not None:
        starts = starts[:max_windows]
    device = next(model.parameters()).device
    total_nll, scored = 0.0, 0
    bar = tqdm(total=len(starts), desc="perplexity", unit="win", disable=not progress, leave=False)
    for i in range(0, len(starts), batch_size):
        batch_starts = starts[i:i + batch_size]
        batch = torch.stack([ids[s:s + seq_len] for s in batch_starts]).to(device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        logp = F.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, batch[:, 1:, None]).squeeze(-1)  # [b, seq_len-1]; position j predicts token j+1
        for row, s in enumerate(batch_starts):
            # Score only tokens past what the previous window covered (all of them for the first window).
            first_new = 0 if s == 0 else max(0, seq_len - stride - 1)
            total_nll += nll[row, first_new:].double().sum().item()
            scored += nll.shape[1] - first_new
        bar.update(len(batch_starts))
        bar.set_postfix(ppl=f"{math.exp(total_nll / scored):.3f}")
    bar.close()
    mean = total_nll / scored
    if not math.isfinite(mean):
        raise FloatingPointError(f"perplexity is not finite (mean NLL {mean}); the model produced NaN/inf logits")
    return PerplexityResult(perplexity=math.exp(mean), nll=mean, scored_tokens=scored, windows=len(starts),
                            corpus_tokens=ids.numel(), seq_len=seq_len, stride=stride)
