"""Launcher presets: local_gpus runs sweep points in parallel processes (Hydra's joblib launcher; on CPU here),
slurm composes into one single-GPU submitit job per point."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from harness.config import register_configs

ROOT = Path(__file__).resolve().parent.parent


def test_local_gpus_launcher_runs_a_two_point_sweep_in_parallel_jobs(tmp_path):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONPATH=str(ROOT), QUANTBENCH_GPU_LOCK_DIR=str(tmp_path / "locks"))
    r = subprocess.run([sys.executable, "-m", "harness", "-m", "+launcher=local_gpus", "hydra.launcher.n_jobs=2",
                        "method=none,fp8", "gpu=auto", "bench=perplexity", "bench.perplexity.seq_len=64",
                        "bench.perplexity.max_windows=1", "progress=false", f"results_dir={tmp_path / 'res'}",
                        f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")]
    assert sorted((x["method"]["quant_method"], x["status"]) for x in recs) == [("fp8", "ok"), ("none", "ok")]
    for x in recs:
        assert x["config"]["gpu_pool"] is True and x["config"]["gpu"]["name"] == "auto"
        assert x["metrics"]["perplexity"]["scored_tokens"] == 63


def _hydra(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_local_gpus_preset_sizes_the_pool_to_the_visible_gpus():
    import torch

    cfg = _hydra("+launcher=local_gpus")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == max(1, torch.cuda.device_count()) and cfg.gpu_pool is True


def test_slurm_preset_is_one_single_gpu_task_per_point_with_overridable_partition():
    cfg = _hydra("+launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.partition == "gpu" and launcher.timeout_min == 30
    assert cfg.gpu_pool is False  # SLURM hands each job its own GPU
