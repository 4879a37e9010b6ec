"""The gpu= presets (a run on the wrong GPU fails clearly and is recorded as failed) and the file-lock GPU pool
that gives each parallel job its own GPU."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness import gpu

ROOT = Path(__file__).resolve().parent.parent
TINY = ("method=none", "bench=perplexity", "bench.perplexity.seq_len=64", "bench.perplexity.max_windows=1",
        "progress=false")


def harness(tmp_path, *args):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONPATH=str(ROOT))  # this checkout's code, wherever installed
    return subprocess.run([sys.executable, "-m", "harness", *TINY, f"results_dir={tmp_path / 'res'}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU side: no H100 here")
def test_gpu_preset_on_another_device_fails_clearly_and_is_recorded(tmp_path):
    r = harness(tmp_path, "gpu=h100")
    assert r.returncode != 0
    assert "gpu=h100 expects a CUDA device named like 'H100'" in r.stderr and "gpu=auto" in r.stderr
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")]
    assert rec["status"] == "failed" and "GpuMismatchError" in rec["error"]
    assert rec["config"]["gpu"]["name"] == "h100" and rec["config"]["gpu"]["datasheet_hbm_gbps"] == 3350


def test_check_gpu_accepts_auto_anywhere_and_rejects_a_named_gpu_on_cpu():
    gpu.check_gpu({"name": "auto", "device_name": None}, torch.device("cpu"))
    with pytest.raises(gpu.GpuMismatchError, match="gpu=h200 .* on cpu"):
        gpu.check_gpu({"name": "h200", "device_name": "H200"}, torch.device("cpu"))


def test_pool_gives_each_claim_a_different_gpu_and_waits_when_all_are_taken(tmp_path):
    with gpu.claim(n=2, lock_dir=tmp_path) as a, gpu.claim(n=2, lock_dir=tmp_path) as b:
        assert {a, b} == {0, 1}
        with pytest.raises(TimeoutError, match="all 2 GPUs"):
            with gpu.claim(n=2, lock_dir=tmp_path, poll_s=0.01, timeout_s=0.05):
                pass
    with gpu.claim(n=2, lock_dir=tmp_path) as again:  # released on exit
        assert again == 0
    with gpu.claim(n=0, lock_dir=tmp_path) as none:  # no GPU: nothing to claim
        assert none is None


def test_pool_is_shared_across_processes_and_freed_when_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from harness import gpu
        with gpu.claim(n=2, lock_dir={str(tmp_path)!r}) as i:
            print(i, flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "0"
        with gpu.claim(n=2, lock_dir=tmp_path) as mine:
            assert mine == 1
    finally:
        holder.kill()
        holder.wait()
    with gpu.claim(n=2, lock_dir=tmp_path, timeout_s=5) as freed:
        assert freed == 0
