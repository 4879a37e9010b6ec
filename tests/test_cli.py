"""The command line: clear errors for bad overrides, and one real end-to-end run writing a record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def harness(*args, cwd):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_unknown_method_lists_available_methods(tmp_path):
    r = harness("method=bogus", f"results_dir={tmp_path}", cwd=tmp_path)
    assert r.returncode != 0
    assert "Could not find 'method/bogus'" in r.stderr
    assert "fp8" in r.stderr and "none" in r.stderr
    assert not list(tmp_path.glob("*.json"))


def test_malformed_override_names_the_key(tmp_path):
    r = harness("bench.perplexity.seq_len=abc", cwd=tmp_path)
    assert r.returncode != 0
    assert "seq_len" in r.stderr and "abc" in r.stderr


def test_unknown_key_is_rejected(tmp_path):
    r = harness("bench.perplexity.seqlen=128", cwd=tmp_path)
    assert r.returncode != 0
    assert "seqlen" in r.stderr


def test_bad_method_option_fails_before_loading_and_records_the_error(tmp_path):
    r = harness("method=fp8", "method.activation_scheme=sometimes", f"results_dir={tmp_path}", cwd=tmp_path)
    assert r.returncode != 0
    assert "activation_scheme='sometimes'" in r.stderr
    (rec,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert rec["status"] == "failed" and "activation_scheme" in rec["error"]


SMALL = ("bench.perplexity.seq_len=256", "bench.perplexity.max_windows=2", "bench.throughput.prompt_len=16",
         "bench.throughput.gen_len=4", "bench.throughput.repeats=2", "progress=false")


@pytest.mark.slow
def test_fp8_end_to_end_writes_a_complete_record_and_exports_a_checkpoint(tmp_path):
    r = harness("method=fp8", "model=llama", f"results_dir={tmp_path}", f"export_dir={tmp_path / 'ckpt'}", *SMALL,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok" and rec["method"]["quant_method"] == "fp8"
    assert rec["model"]["quantized_layers"] == 30 * 7  # every linear of the 30 blocks; lm_head skipped
    ppl = rec["metrics"]["perplexity"]
    assert ppl["scored_tokens"] == 2 * 255 and 1 < ppl["perplexity"] < 100
    tp = rec["metrics"]["throughput"]
    assert tp["prefill_tokens_per_s"] > 0 and tp["decode_tokens_per_s"] > 0 and tp["peak_memory_bytes"] > 0
    assert set(rec["timings"]) >= {"load_model", "quantize", "perplexity", "throughput"}
    assert rec["config"]["method"]["quant_method"] == "fp8" and rec["env"]["git_sha"]
    # The same record also lands in Hydra's run directory.
    assert len(list((tmp_path / "outputs").rglob(path.name))) == 1

    # The exported FP8 checkpoint loads back (its quantization_config picks the method) with the same perplexity.
    out = tmp_path / "reload"
    r = harness(f"model.name_or_path={tmp_path / 'ckpt'}", f"results_dir={out}", *SMALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (again,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert again["method"] == rec["method"]
    assert again["metrics"]["perplexity"]["perplexity"] == ppl["perplexity"]
