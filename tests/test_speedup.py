"""harness.speedup: speedups pair each point with the unquantized run's point of the same setup (decode mode of that
point, fused or not), so a point that fell back to eager, or a fused run, is never divided by another setup's."""

import pandas as pd
import pytest

from harness import records
from harness.speedup import points_frame, with_speedup


def points_record(method, tok_s, modes, requested="auto", fused=False):
    rec = records.new_record({"model": {"name_or_path": "m"}, "method": {"quant_method": method},
                              "bench": {"throughput": {"decode_mode": requested}}})
    rec["status"], rec["method"], rec["env"]["gpu"] = "ok", {"quant_method": method}, "GPU"
    rec["model"] = {"fused_projections": 64} if fused else {}
    points = [{"batch_size": b, "prompt_len": 8, "gen_len": 4, "prefill_tokens_per_s": 10.0 * t,
               "decode_tokens_per_s": t, "time_to_first_token_s": 0.1, "time_per_output_token_s": 0.01,
               "peak_memory_bytes": 2**20, "decode_mode": mode} for (b, t), mode in zip(tok_s.items(), modes)]
    rec["metrics"]["throughput"] = {"points": points, "prefill_points": [], "weight_memory_bytes": 2**20,
                                    "decode_mode": "+".join(sorted(set(modes)))}
    return rec


def test_speedups_pair_points_of_the_same_setup():
    recs = [points_record("none", {1: 100.0, 8: 800.0}, ["cuda_graph", "cuda_graph"]),
            # batch 8 fell back to eager: no cuda_graph baseline to divide by, batch 1 still pairs
            points_record("gptq", {1: 250.0, 8: 400.0}, ["cuda_graph", "eager"]),
            points_record("none", {1: 120.0, 8: 900.0}, ["cuda_graph", "cuda_graph"], fused=True),
            points_record("gptq", {1: 360.0, 8: 1800.0}, ["cuda_graph", "cuda_graph"], fused=True)]
    t = with_speedup(points_frame(recs)).set_index(["setup", "method", "batch"])
    assert t.loc[("cuda_graph", "gptq", 1), "decode x"] == pytest.approx(2.5)
    assert t.loc[("eager", "gptq", 8), "decode tok/s"] == 400.0
    assert t["decode x"].isna().sum() == 1 and pd.isna(t.loc[("eager", "gptq", 8), "decode x"])  # no eager baseline
    assert t.loc[("cuda_graph+fused", "gptq", 1), "decode x"] == pytest.approx(3.0)
    assert t.loc[("cuda_graph+fused", "gptq", 8), "decode x"] == pytest.approx(2.0)


def test_prefill_points_pair_by_prefill_mode_and_the_newest_run_per_point_wins():
    def with_prefill(rec, tok_s, mode=None, created="2026-01-01T00:00:00+00:00"):
        rec["created_at"] = created
        if tok_s is None:
            return rec
        point = {"batch_size": 1, "prompt_len": 2048, "prefill_tokens": 2048, "prefill_tokens_per_s": tok_s,
                 "time_to_first_token_s": 2048 / tok_s, "peak_memory_bytes": 2**20}
        if mode:
            point["prefill_mode"] = mode
        rec["metrics"]["throughput"]["prefill_points"] = [point]
        return rec

    recs = [with_prefill(points_record("none", {1: 100.0}, ["compile"]), 1000.0, "cuda_graph"),
            # a newer bf16 run without prefill points leaves the older one's prefill point in place
            with_prefill(points_record("none", {1: 110.0}, ["compile"]), None, created="2026-01-02T00:00:00+00:00"),
            with_prefill(points_record("fp8", {1: 150.0}, ["cuda_graph"]), 1300.0, "cuda_graph"),
            # an older record's prefill point (no prefill_mode) ran eagerly: never paired with a replayed one
            with_prefill(points_record("gptq", {1: 200.0}, ["compile"]), 900.0)]
    t = with_speedup(points_frame(recs)).set_index(["setup", "method", "kind", "batch"])
    assert t.loc[("prefill:cuda_graph", "fp8", "prefill", 1), "prefill x"] == pytest.approx(1.3)
    assert pd.isna(t.loc[("prefill:eager", "gptq", "prefill", 1), "prefill x"])
    assert t.loc[("compile", "none", "decode", 1), "decode tok/s"] == 110.0  # the newest run's point
    assert len(t) == 6  # three decode points, three prefill points


def test_a_ratio_against_another_commits_baseline_says_so():
    # "baseline": whether the none run divided by ran the same commit (as runs of one GPU call do) or which
    recs = [points_record("none", {1: 100.0}, ["compile"]), points_record("gptq", {1: 240.0}, ["compile"]),
            points_record("fp8", {1: 150.0}, ["compile"]), points_record("awq", {1: 50.0}, ["eager"])]
    for rec, sha in zip(recs, ["aaaaaaa111", "aaaaaaa111", "bbbbbbb222", "ccccccc333"]):
        rec["env"]["git_sha"] = sha
    t = with_speedup(points_frame(recs)).set_index("method")
    assert t.loc["gptq", "baseline"] == "same commit" and t.loc["none", "baseline"] == "same commit"
    assert t.loc["fp8", "baseline"] == "commit aaaaaaa" and t.loc["fp8", "decode x"] == pytest.approx(1.5)
    assert t.loc["awq", "baseline"] == "" and pd.isna(t.loc["awq", "decode x"])  # no eager baseline at all
