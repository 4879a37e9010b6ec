"""Sweeps: a failing point is recorded and the sweep goes on; a re-run skips what the same code already
recorded on this machine; force=true re-runs it; the hash ignores where results are written."""

import json
import os
import subprocess
import sys

from harness import records

TINY = ("method=none", "bench=perplexity", "bench.perplexity.seq_len=64", "bench.perplexity.max_windows=1",
        "progress=false")


def sweep(tmp_path, *args):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", QUANTBENCH_GIT_SHA="0123456789abcdef", QUANTBENCH_GIT_DIRTY="0")
    return subprocess.run([sys.executable, "-m", "harness", "-m", *TINY, f"results_dir={tmp_path / 'res'}",
                           f"hydra.sweep.dir={tmp_path / 'multirun'}", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def statuses(tmp_path):
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")]
    return sorted((r["config"]["model"]["name_or_path"], r["status"]) for r in recs)


def test_failed_point_does_not_stop_the_sweep_and_rerun_resumes(tmp_path):
    points = f"model.name_or_path={tmp_path / 'no-such-model'},embedded:smollm2-135m-instruct"
    r = sweep(tmp_path, points)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[quantbench] FAILED" in r.stdout and "ppl=" in r.stdout
    good, bad = "embedded:smollm2-135m-instruct", str(tmp_path / "no-such-model")
    assert statuses(tmp_path) == sorted([(good, "ok"), (bad, "failed")])
    failed = next(json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")
                  if json.loads(p.read_text())["status"] == "failed")
    assert "no-such-model" in failed["error"]

    r = sweep(tmp_path, points)  # the ok point is skipped, the failed one is tried again
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("skipped (already recorded") == 1
    assert statuses(tmp_path) == sorted([(good, "ok"), (bad, "failed"), (bad, "failed")])

    r = sweep(tmp_path, f"model.name_or_path={good}", "force=true")
    assert r.returncode == 0 and "skipped" not in r.stdout
    assert statuses(tmp_path).count((good, "ok")) == 2


def test_config_hash_ignores_plumbing_but_not_what_is_measured():
    base = {"model": {"name_or_path": "m"}, "method": {"quant_method": "fp8"}, "results_dir": "a", "force": False}
    assert records.config_hash(base) == records.config_hash(base | {"results_dir": "b", "force": True,
                                                                      "progress": False, "export_dir": "x"})
    assert records.config_hash(base) != records.config_hash(base | {"method": {"quant_method": "none"}})


def test_dirty_or_unknown_code_never_counts_as_done(tmp_path):
    rec = records.new_record({"results_dir": str(tmp_path)})
    rec["status"] = "ok"
    rec["env"] |= {"git_sha": "abc", "git_dirty": False}
    records.write_record(rec, tmp_path)
    env = dict(rec["env"])
    assert records.find_done(tmp_path, rec["config_hash"], env) is not None
    assert records.find_done(tmp_path, rec["config_hash"], env | {"git_sha": "def"}) is None
    assert records.find_done(tmp_path, rec["config_hash"], env | {"git_dirty": True}) is None
    assert records.find_done(tmp_path, "another-hash", env) is None
    # a diagnostic switch (kernels.launch, not part of the config) set on one side: another run
    assert records.find_done(tmp_path, rec["config_hash"], env | {"diagnostics": {"QUANTBENCH_PDL_KERNELS": "0"}}) \
        is None


def test_isolated_sweep_runs_each_job_in_its_own_process(tmp_path):
    # isolate=true (the default where a CUDA GPU is visible): each job is a single run in a fresh process with the
    # job's config sources and overrides, so nothing one job leaves in the process touches the next one's
    # measurements. Here the sweep comes from a config of its own (--config-dir, hydra.mode=MULTIRUN, no -m) and
    # each job's directory is named by its overrides ('=' and ',' in the path).
    extra = tmp_path / "extra" / "sweep"
    extra.mkdir(parents=True)
    (extra / "two_seeds.yaml").write_text("# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n"
                                         "    params:\n      seed: 0,1\n")
    env = dict(os.environ, HYDRA_FULL_ERROR="0", QUANTBENCH_GIT_SHA="0123456789abcdef", QUANTBENCH_GIT_DIRTY="0")
    r = subprocess.run([sys.executable, "-m", "harness", f"--config-dir={tmp_path / 'extra'}", "+sweep=two_seeds",
                        *TINY, f"results_dir={tmp_path / 'res'}", "model.name_or_path=embedded:smollm2-135m-instruct",
                        "isolate=true", f"hydra.sweep.dir={tmp_path / 'multirun'}",
                        "hydra.sweep.subdir=${hydra.job.override_dirname}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("in its own process") == 2 and r.stdout.count("ppl=") == 2, r.stdout[-2000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")]
    assert sorted(rec["config"]["seed"] for rec in recs) == [0, 1] and all(rec["status"] == "ok" for rec in recs)
    for rec in recs:  # each record's command is its own single run, reproducible on its own
        words = rec["command"].split()
        assert words[:3] == ["python", "-m", "harness"] and "-m" not in words[3:] and "isolate=false" in words
        assert "hydra.mode=RUN" in words
    assert {rec["config_hash"] for rec in recs} == {records.config_hash(rec["config"]) for rec in recs}
    # every job wrote its copy into its own sweep directory, not a new multirun of its own
    copies = sorted(p.parent.name for p in (tmp_path / "multirun").rglob("*.json"))
    assert len(copies) == 2 and all("seed=" in c for c in copies), copies
    # a job whose process fails is reported and the sweep goes on
    r = sweep(tmp_path, f"model.name_or_path={tmp_path / 'missing'},embedded:smollm2-135m-instruct", "seed=2",
              "isolate=true")
    assert r.returncode == 0 and "[quantbench] FAILED" in r.stdout and r.stdout.count("ppl=") == 1
