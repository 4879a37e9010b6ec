"""The regression gate: same results pass, a perplexity or speed regression beyond the threshold and a point
that failed or vanished fail it (exit 1), a bad record is a usage error (exit 2)."""

import json

from harness import compare, records


def write(directory, method="fp8", ppl=18.0, prefill=1000.0, status="ok"):
    rec = records.new_record({"model": {"name_or_path": "m"}, "method": {"quant_method": method}})
    rec["status"] = status
    rec["env"]["gpu"] = "H100"
    rec["method"] = {"quant_method": method}
    if status == "ok":
        rec["metrics"] = {
            "perplexity": {"perplexity": ppl, "dataset": "wiki", "seq_len": 2048, "scored_tokens": 1000},
            "throughput": {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": 10.0, "peak_memory_bytes": 1}}
    records.write_record(rec, directory)


def gate(tmp_path, base, cur):
    return compare.main([str(base), "--current", str(cur), "--out", str(tmp_path / "c.md")])


def test_identical_results_pass_and_small_changes_are_tolerated(tmp_path):
    for d, ppl in ((tmp_path / "a", 18.0), (tmp_path / "b", 18.05)):
        write(d, "none", 17.0)
        write(d, "fp8", ppl, prefill=950.0 if d.name == "b" else 1000.0)
    assert gate(tmp_path, tmp_path / "a", tmp_path / "b") == 0
    assert "No regressions" in (tmp_path / "c.md").read_text()


def test_perplexity_and_speed_regressions_fail(tmp_path):
    write(tmp_path / "a", "fp8", 18.0, 1000.0)
    write(tmp_path / "b", "fp8", 18.5, 1000.0)
    write(tmp_path / "c", "fp8", 18.0, 700.0)
    assert gate(tmp_path, tmp_path / "a", tmp_path / "b") == 1
    assert "ppl +2.78%" in (tmp_path / "c.md").read_text()
    assert gate(tmp_path, tmp_path / "a", tmp_path / "c") == 1
    assert "prefill -30.0%" in (tmp_path / "c.md").read_text()


def test_failed_or_missing_points_fail(tmp_path):
    write(tmp_path / "a", "fp8")
    write(tmp_path / "a", "gptq")
    write(tmp_path / "b", "fp8")
    write(tmp_path / "b", "gptq", status="failed")
    assert gate(tmp_path, tmp_path / "a", tmp_path / "b") == 1
    assert "missing or failed" in (tmp_path / "c.md").read_text()


def test_unreadable_record_is_a_usage_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.json").write_text(json.dumps({"not": "a record"}))
    write(tmp_path / "b")
    assert gate(tmp_path, tmp_path / "a", tmp_path / "b") == 2


def test_all_points_failed_now_fails_the_gate_without_crashing(tmp_path):
    write(tmp_path / "a", "none")
    write(tmp_path / "a", "fp8")
    write(tmp_path / "b", "none", status="failed")
    write(tmp_path / "b", "fp8", status="failed")
    assert gate(tmp_path, tmp_path / "a", tmp_path / "b") == 1
    assert (tmp_path / "c.md").read_text().count("missing or failed") == 2


def test_where_restricts_the_baseline_points(tmp_path):
    write(tmp_path / "a", "none")
    write(tmp_path / "a", "gptq")
    write(tmp_path / "b", "none")
    args = [str(tmp_path / "a"), "--current", str(tmp_path / "b"), "--out", str(tmp_path / "c.md")]
    assert compare.main(args) == 1  # gptq is missing now
    assert compare.main(args + ["--where", "method == 'none'"]) == 0
    assert compare.main(args + ["--where", "no_such_column =="]) == 2
