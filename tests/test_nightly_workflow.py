"""The nightly GitHub Actions workflow: valid YAML with the schedule, the GPU runner and the gate's steps, and
its sweep -> report -> compare commands run as written (here on CPU, where gpu=h100 makes every point fail, so
the gate must fail)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def load():
    wf = yaml.safe_load(WORKFLOW.read_text())
    return wf, wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True


def steps(job):
    return {s.get("name", s.get("uses")): s for s in job["steps"]}


def test_workflow_runs_nightly_on_a_self_hosted_gpu_runner():
    wf, on = load()
    assert on["schedule"][0]["cron"] and "workflow_dispatch" in on
    job = wf["jobs"]["nightly"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    s = steps(job)
    assert "+sweep=nightly" in s["Nightly sweep"]["run"]
    assert "python -m harness.report" in s["Report"]["run"]
    assert "python -m harness.compare results/h100" in s["Compare with the committed baseline"]["run"]
    upload = s["Upload report and records"]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"
    assert "reports/nightly/" in upload["with"]["path"]


def test_the_gate_fails_when_the_nightly_points_fail(tmp_path):
    """Runs the workflow's own sweep, report and compare commands; no H100 here, so every point fails fast."""
    wf, _ = load()
    job = wf["jobs"]["nightly"]
    s = steps(job)
    env = dict(os.environ, **job["env"], NIGHTLY_DIR=str(tmp_path / "nightly"), PYTHONPATH=str(ROOT),
               HYDRA_FULL_ERROR="0", CUDA_VISIBLE_DEVICES="")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"

    def step(name):
        # The compare writes into reports/nightly: run from a copy of the baseline so the checkout stays clean.
        return subprocess.run(["bash", "-c", s[name]["run"]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)

    (tmp_path / "results").symlink_to(ROOT / "results")
    r = step("Nightly sweep")
    assert r.returncode == 0, r.stderr[-2000:]  # failed points are recorded, the sweep goes on
    assert r.stdout.count("[quantbench] FAILED") == 5 and "GpuMismatchError" in r.stdout
    assert step("Report").returncode == 0
    assert (tmp_path / "reports" / "nightly" / "index.html").exists()
    r = step("Compare with the committed baseline")
    assert r.returncode == 1
    assert (tmp_path / "reports" / "nightly" / "compare.md").read_text().count("missing or failed") == 5
