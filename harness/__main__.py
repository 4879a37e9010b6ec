"""`python -m harness [overrides]`: one run (or a Hydra multirun with -m)."""

from __future__ import annotations

import re
import subprocess
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import register_configs
from harness.gpu import use_pool

register_configs()


def _isolated(plain: dict) -> bool:
    if plain.get("isolate") is not None:
        return bool(plain["isolate"])
    import torch

    return torch.cuda.is_available()


def _quoted(value: str) -> str:
    """A Hydra override value in single quotes (paths may hold '=', ',', brackets). Hydra reads a backslash as an
    escape only before a quote or at the end of the string, so only those backslashes are doubled."""
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"


def run_in_own_process(hc) -> int:
    """This multirun job as a single run in a fresh Python process (same config sources and overrides, same output
    dir): nothing a previous job left in this process (allocator state, compiled graphs, caches) can touch its
    measurements. Returns the child's exit status."""
    cmd = [sys.executable, "-m", "harness", f"--config-name={hc.job.config_name}"]
    for src in hc.runtime.config_sources:
        if src.provider == "main" and src.schema == "file":
            cmd.append(f"--config-path={src.path}")
        elif src.provider == "command-line":
            cmd.append(f"--config-dir={src.path}")
    cmd += [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath")]
    # a sweep config (+sweep=...) sets hydra.mode=MULTIRUN: the child is one run, in this job's directory
    cmd += [*hc.overrides.task, "isolate=false", "hydra.mode=RUN", f"hydra.run.dir={_quoted(hc.runtime.output_dir)}"]
    print(f"[quantbench] job {hc.job.num} in its own process: {' '.join(hc.overrides.task)}", flush=True)
    return subprocess.run(cmd).returncode


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from harness.runner import run

    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and _isolated(plain):
        code = run_in_own_process(hc)
        if code != 0:  # its record, if it got that far, says why
            why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            print(f"[quantbench] FAILED {' '.join(hc.overrides.task)}: {why}")
        return
    try:
        with use_pool(bool(plain.get("gpu_pool"))):
            record = run(plain, extra_dirs=[hc.runtime.output_dir])
    except Exception as e:
        if hc.mode != RunMode.MULTIRUN:
            raise
        # One failed sweep point (its record says why) must not stop the others.
        print(f"[quantbench] FAILED {' '.join(hc.overrides.task)}: {type(e).__name__}: {e}")
        return
    if record.get("skipped"):
        print(f"[quantbench] skipped (already recorded, force=true re-runs): {record['paths'][0]}")
        return
    m = record["metrics"]
    if record.get("kind") == "kernels":
        ok = [r for r in m["rows"] if r["status"] == "ok"]
        print(f"[quantbench] kernels: {len(ok)} of {len(m['rows'])} points timed; roofline {m['roofline']}")
        print(f"[quantbench] record: {record['paths'][0]}")
        return
    parts = [f"method={record['method']['quant_method']}"]
    if "perplexity" in m:
        p = m["perplexity"]
        parts.append(f"ppl={p['perplexity']:.4f} ({p['scored_tokens']} tokens, {p['dataset']})")
    if "throughput" in m:
        t = m["throughput"]
        parts.append(f"prefill={t['prefill_tokens_per_s']:.1f} tok/s decode={t['decode_tokens_per_s']:.1f} tok/s")
        if len(t.get("points", [])) > 1:
            parts.append("decode tok/s by batch: " + " ".join(
                f"b{p['batch_size']}={p['decode_tokens_per_s']:.0f}" for p in t["points"]))
        parts += [f"prefill@{p['prompt_len']}={p['prefill_tokens_per_s']:.0f} tok/s" for p in t.get("prefill_points", [])]
        if "decode_mode" in t:
            parts.append(f"decode_mode={t['decode_mode']}")
    print("[quantbench] " + "  ".join(parts))
    for task, scores in m.get("lm_eval", {}).items():
        shown = [f"{k}={v:.4g}" + (f"±{scores[k + '_stderr']:.2g}" if scores.get(k + "_stderr") is not None else "")
                 for k, v in scores.items() if not k.endswith("_stderr") and k != "samples" and v is not None]
        print(f"[quantbench] lm_eval {task} ({scores.get('samples')} items): {'  '.join(shown)}")
    print(f"[quantbench] record: {record['paths'][0]}")


if __name__ == "__main__":
    main()
