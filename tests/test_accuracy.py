"""Accuracy of the default model on the default corpus: a broken harness or model must fail these.

Measured on this slice (first 8 windows of 512 tokens of the embedded Wikipedia corpus, float32, CPU):
baseline 19.59; the same architecture with random weights ~5.5e4.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.data import EMBEDDED_CORPORA
from methods.fp8 import FP8Config

BASELINE_RANGE = (12.0, 30.0)


def test_corpus_is_real_wikipedia_text():
    articles = EMBEDDED_CORPORA["wiki"].eval_texts()
    assert len(articles) == 2349
    words = sum(len(a.split()) for a in articles)
    assert words > 250_000
    assert len(set(articles)) == len(articles)  # no repeated filler
    assert not any("<doc" in a or "</doc>" in a for a in articles)


def test_baseline_perplexity_in_range(baseline_ppl):
    assert BASELINE_RANGE[0] < baseline_ppl < BASELINE_RANGE[1]


def test_random_weights_fail_the_baseline_range(fresh_model, eval_ppl):
    torch.manual_seed(0)
    random_model = AutoModelForCausalLM.from_config(fresh_model.config).eval()
    assert eval_ppl(random_model).perplexity > 10 * BASELINE_RANGE[1]


@pytest.mark.parametrize("options,margin_pct", [
    ({}, 3.0),  # the default: per-tensor weights, dynamic per-tensor activations
])
def test_fp8_close_to_baseline_but_not_equal(fresh_model, eval_ppl, baseline_ppl, options, margin_pct):
    FP8Config.from_dict(options).prepare_model(fresh_model, progress=False)
    ppl = eval_ppl(fresh_model).perplexity
    assert ppl != baseline_ppl
    assert abs(ppl / baseline_ppl - 1) * 100 < margin_pct
