"""Accuracy of the default model on the default corpus: a broken harness or model must fail these.

Measured on this slice (first 8 windows of 512 tokens of the embedded Wikipedia corpus, float32, 2-core CPU):
baseline 19.59; the same architecture with random weights ~5.5e4; fp8 dynamic per-tensor 20.40 (+4.1 %),
per-channel weights + per-token activations 20.02 (+2.2 %), 128x128 blocks 20.21 (+3.2 %), static per-tensor
activations 20.31 (+3.7 %). This 135M model is more sensitive to FP8 than the 7B+ models of the literature.
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


FP8_SCHEMES = {
    "tensor": ({}, 6.0),  # the default: per-tensor weights, dynamic per-tensor activations
    "channel_token": ({"weight_granularity": "channel", "activation_granularity": "token"}, 3.5),
    "block": ({"weight_granularity": "block"}, 5.0),
    "static": ({"activation_scheme": "static"}, 5.5),
}


@pytest.fixture(scope="module")
def fp8_ppl(model_dir, tokenizer, eval_ppl):
    """Perplexity of the default model under each FP8 scheme (computed once for the tests below)."""
    from harness.config import DatasetConf
    from harness.data import calibration_batches

    out = {}
    for scheme, (options, _) in FP8_SCHEMES.items():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        cfg = FP8Config.from_dict(options)
        calib = calibration_batches(tokenizer, DatasetConf(), 16, 512) if cfg.needs_calibration() else None
        cfg.prepare_model(model, calib, progress=False)
        out[scheme] = eval_ppl(model).perplexity
    return out


@pytest.mark.parametrize("scheme", list(FP8_SCHEMES))
def test_fp8_close_to_baseline_but_not_equal(scheme, fp8_ppl, baseline_ppl):
    ppl, margin_pct = fp8_ppl[scheme], FP8_SCHEMES[scheme][1]
    assert ppl != baseline_ppl
    assert abs(ppl / baseline_ppl - 1) * 100 < margin_pct


def test_finer_fp8_scales_lose_less(fp8_ppl):
    """The published relation: per-channel/per-token scales are closer to baseline than one per tensor."""
    assert fp8_ppl["channel_token"] < fp8_ppl["tensor"]
