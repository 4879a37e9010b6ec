"""Task accuracy through lm-evaluation-harness, on the model object the run already loaded and quantized.

The model is wrapped as lm-eval's HFLM (`pretrained=<the nn.Module>`): lm-eval neither re-loads it nor moves or
casts it, so the quantized layers the speed numbers come from are the ones scored. Tasks are found by name in
lm-eval's registry plus include paths; the offline tasks built from the embedded corpus (harness.eval_tasks)
are always on the path, so the default tasks need no hub. Hub tasks (hellaswag, arc_easy, ...) download their
data through `datasets` when HF_HUB_OFFLINE is unset.
"""

from __future__ import annotations

import copy
import difflib
import math
from importlib import metadata
from typing import Any

from harness import eval_tasks

# What the record keeps of each task's lm-eval config (the rest is prompt templating detail).
_CONFIG_KEYS = ("task", "dataset_path", "dataset_name", "dataset_kwargs", "test_split", "output_type",
                "num_fewshot", "metadata")


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ImportError("bench.lm_eval needs lm-evaluation-harness: pip install 'lm-eval>=0.4.9' "
                          "(or pip install 'quantbench[eval]')") from e
    return lm_eval, HFLM, TaskManager


def wrap_model(model, tokenizer, batch_size: int = 16, max_length: int | None = None):
    """lm-eval's HFLM around an already loaded model (no re-load, no move, no cast). The tokenizer is copied:
    HFLM may set its pad token, which must not leak into the rest of the run. Log-softmax runs in float32, as
    our perplexity does, also for a bfloat16 model."""
    _, HFLM, _ = _import_lm_eval()
    return HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size, max_length=max_length,
                softmax_dtype="float32")


def task_manager(tasks: list[str], include_path: str | None = None):
    """A TaskManager that knows every name in `tasks`; an unknown name raises ValueError listing the offline
    tasks and the closest lm-eval task names. lm-eval's own registry (~15k tasks, seconds to index) is only
    indexed when a task is not one of ours."""
    _, _, TaskManager = _import_lm_eval()
    if not tasks:
        raise ValueError(f"bench.lm_eval.tasks is empty; offline tasks: {sorted(eval_tasks.OFFLINE_TASKS)}")
    paths = [str(eval_tasks.task_dir())] + ([str(include_path)] if include_path else [])
    tm = TaskManager(include_path=paths, include_defaults=False)
    if not set(tasks) <= set(tm.all_tasks):
        tm = TaskManager(include_path=paths)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        close = sorted({m for t in unknown for m in difflib.get_close_matches(t, tm.all_tasks, n=5, cutoff=0.6)})
        raise ValueError(
            f"unknown lm-eval task(s) {unknown}. Offline tasks (no hub needed): {sorted(eval_tasks.OFFLINE_TASKS)}"
            + (f"; closest task names: {close}" if close else "")
            + f". lm-eval knows {len(tm.all_tasks)} tasks and groups (`lm_eval ls tasks` lists them); tasks of "
            "your own: bench.lm_eval.include_path=<folder of task YAMLs>.")
    return tm


def _number(v: Any) -> Any:
    """lm-eval writes "N/A" for a missing stderr and may give NaN: both become None (JSON null)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return None


def task_metrics(results: dict) -> dict:
    """{task: {metric: value, metric_stderr: value, ..., samples: n}} from simple_evaluate's results
    ("acc,none" -> "acc"; a metric under a filter other than "none" keeps it: "exact_match,flexible")."""
    out = {}
    for task, res in results["results"].items():
        row = {}
        for key, value in res.items():
            if "," not in key:
                continue  # alias, name, sample_len
            metric, filt = key.split(",", 1)
            row[metric if filt == "none" else f"{metric},{filt}"] = _number(value)
        n = results.get("n-samples", {}).get(task, {})
        if n:
            row["samples"] = n.get("effective")
        out[task] = row
    return out


def task_configs(results: dict) -> dict:
    """What defines each task in the record: its lm-eval config (data source, split, shots, version), plus the
    sha256 of the data file for the offline tasks."""
    manifest = eval_tasks.manifest()["tasks"]
    out = {}
    for task, cfg in results.get("configs", {}).items():
        kept = {k: cfg.get(k) for k in _CONFIG_KEYS if cfg.get(k) is not None}
        if task in manifest:
            kept["data_sha256"] = manifest[task]["sha256"]
            kept["data_items"] = manifest[task]["items"]
        out[task] = kept
    return out


def evaluate(model, tokenizer, tasks: list[str], limit: int | None = None, num_fewshot: int | None = None,
             batch_size: int = 16, max_length: int | None = None, include_path: str | None = None,
             bootstrap_iters: int = 100_000, seed: int = 0, manager=None) -> tuple[dict, dict]:
    """Run lm-eval `tasks` on `model`; returns (metrics by task, run details: lm-eval version, settings, task
    configs). `limit` = the first N items of each task (the offline tasks' items are in hashed, random order).
    `manager`: a TaskManager from task_manager() (built here when None)."""
    lm_eval, _, _ = _import_lm_eval()
    tm = manager or task_manager(list(tasks), include_path)
    lm = wrap_model(model, tokenizer, batch_size=batch_size, max_length=max_length)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, task_manager=tm, log_samples=False,
        bootstrap_iters=bootstrap_iters, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed)
    details = {"version": metadata.version("lm_eval"), "max_length": lm.max_length, "batch_size": batch_size,
               "limit": limit, "num_fewshot": num_fewshot, "tasks": task_configs(results)}
    return task_metrics(results), details
