"""Result records: round trip, atomic writes, schema checks, report rendering."""

import json
import os

import pytest

from harness import records, report


def _record(method="none", ppl=10.0):
    cfg = {"model": {"name_or_path": "m"}, "method": {"quant_method": method}, "results_dir": "x"}
    rec = records.new_record(cfg)
    rec["status"] = "ok"
    rec["metrics"] = {"perplexity": {"perplexity": ppl, "dataset": "d", "seq_len": 8, "scored_tokens": 7}}
    return rec


def test_round_trip(tmp_path):
    rec = _record()
    path = records.write_record(rec, tmp_path)
    assert records.read_record(path) == json.loads(json.dumps(rec))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_env_fingerprint_has_versions_and_git():
    env = _record()["env"]
    for key in ("host", "cpu", "torch", "transformers", "git_sha", "python"):
        assert key in env
    assert env["torch"]


def test_config_hash_is_stable_and_sensitive():
    a = {"x": 1, "y": {"z": 2}}
    assert records.config_hash(a) == records.config_hash({"y": {"z": 2}, "x": 1})
    assert records.config_hash(a) != records.config_hash({"x": 2, "y": {"z": 2}})


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        records.write_record(_record(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_records_are_rejected(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(records.RecordError, match="not JSON"):
        records.read_record(tmp_path / "a.json")
    rec = _record()
    rec["schema_version"] = 999
    with pytest.raises(records.RecordError, match="schema_version"):
        records.validate(rec)


def test_report_table_has_delta_vs_baseline(tmp_path):
    records.write_record(_record("none", 10.0), tmp_path)
    records.write_record(_record("fp8", 10.5), tmp_path)
    out = tmp_path / "r" / "summary.md"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| fp8" in text and "| none" in text
    fp8_row = next(line for line in text.splitlines() if "| fp8" in line)
    assert " 5 " in fp8_row  # +5 % perplexity vs the none run
