"""Perplexity protocol: window layout and known answers on models whose perplexity is exact."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.metrics.perplexity import perplexity, window_starts


class Uniform(nn.Module):
    """Predicts every token with probability 1/V: perplexity is exactly V."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


class NextTokenOracle(nn.Module):
    """Knows the next token only when it has seen >= `need` tokens of context in the window."""

    def __init__(self, ids, vocab, need):
        super().__init__()
        self.ids, self.vocab, self.need = ids, vocab, need
        self.p = nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, input_ids, use_cache=False):
        b, n = input_ids.shape
        logits = torch.zeros(b, n, self.vocab)
        for row in range(b):
            seq = input_ids[row].tolist()
            start = next(s for s in range(len(self.ids)) if self.ids[s:s + n].tolist() == seq)
            self.calls.append(start)
            for j in range(n):
                if j + 1 >= self.need and start + j + 1 < len(self.ids):
                    logits[row, j, self.ids[start + j + 1]] = 50.0
        return SimpleNamespace(logits=logits)


def test_window_layout_drops_the_remainder_like_the_papers():
    assert window_starts(10, 4, 4) == [0, 4]
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="fewer than one window"):
        window_starts(3, 4, 4)
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 5)


@pytest.mark.parametrize("seq_len,stride,batch", [(8, 8, 1), (8, 8, 3), (8, 3, 2)])
def test_uniform_model_has_perplexity_vocab_size(seq_len, stride, batch):
    ids = torch.arange(50) % 7
    res = perplexity(Uniform(11), ids, seq_len=seq_len, stride=stride, batch_size=batch, progress=False)
    assert res.perplexity == pytest.approx(11.0, rel=1e-6)  # float32 log-softmax
    starts = window_starts(50, seq_len, stride)
    # The first window scores seq_len-1 tokens; each later one the `stride` tokens no window scored before
    # (non-overlapping windows cannot score their own first token, as in the papers).
    assert res.scored_tokens == (seq_len - 1) + (len(starts) - 1) * min(stride, seq_len - 1)
    assert res.windows == len(starts)


def test_strided_windows_score_only_new_tokens_with_full_context():
    ids = torch.arange(60)  # distinct tokens, so the oracle can tell where a window starts
    # The oracle predicts token j+1 only from >= 5 tokens of context (else uniform over 60: nll ln 60).
    miss, hit = math.log(60), math.log1p(59 * math.exp(-50))
    plain = perplexity(NextTokenOracle(ids, 60, need=5), ids, seq_len=10, stride=10, progress=False)
    # 6 windows x 9 scored tokens; in each, the first 4 predictions lack context.
    assert plain.scored_tokens == 54
    assert plain.nll == pytest.approx((24 * miss + 30 * hit) / 54, rel=1e-6)
    strided = perplexity(NextTokenOracle(ids, 60, need=5), ids, seq_len=10, stride=4, progress=False)
    # 13 windows; the first scores 9 tokens (4 misses), each later one only its last 4, all with 6+ context.
    assert strided.scored_tokens == 9 + 12 * 4
    assert strided.nll == pytest.approx((4 * miss + 53 * hit) / 57, rel=1e-6)


def test_nan_logits_raise():
    class NaNModel(Uniform):
        def forward(self, input_ids, use_cache=False):
            return SimpleNamespace(logits=torch.full((*input_ids.shape, self.vocab), float("nan")))

    with pytest.raises(FloatingPointError, match="not finite"):
        perplexity(NaNModel(5), torch.arange(20) % 5, seq_len=5, progress=False)
