"""One run: config -> model -> method -> metrics -> result record."""

from __future__ import annotations

import contextlib
import gc
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import methods
from harness import data, records
from harness.config import method_options
from harness.gpu import check_gpu
from harness.metrics.perplexity import perplexity
from harness.metrics.throughput import throughput
from harness.models import describe, load_model, resolve_device


def build_method(method_cfg: Any) -> methods.QuantizationConfig:
    """The QuantizationConfig a `method=...` group selects (validated, unknown names listed)."""
    opts = method_options(method_cfg)
    name = opts.pop("quant_method", None)
    if name is None:
        raise ValueError(f"method config has no quant_method; known methods: {', '.join(methods.known_methods())}")
    return methods.get_method_class(name).from_dict(opts)


def _resolve_method(requested: methods.QuantizationConfig,
                    checkpoint: methods.QuantizationConfig | None) -> tuple[methods.QuantizationConfig, bool]:
    """Returns (method in effect, whether the harness must still quantize the model)."""
    if checkpoint is None:
        return requested, True
    if requested.name not in ("none", checkpoint.name):
        raise ValueError(f"the model is a {checkpoint.name} checkpoint; method={requested.name} cannot re-quantize "
                         f"it. Use method=none or method={checkpoint.name} (its quantization_config is used).")
    return checkpoint, False


class _Phases:
    def __init__(self, timings: dict):
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.timings[name] = round(time.perf_counter() - t0, 4)


def run(cfg: dict, extra_dirs: list[str] | None = None) -> dict:
    """Run one configuration (a resolved plain dict) and write its record; returns the record.

    A failure still writes a record with status=failed and the error, then re-raises. A configuration already
    recorded as ok in results_dir by the same code on the same machine is skipped (its record is returned, with
    `skipped: True`) unless cfg["force"].
    """
    record = records.new_record(cfg)
    if not cfg.get("force") and Path(cfg["results_dir"]).is_dir():
        done = records.find_done(cfg["results_dir"], record["config_hash"], record["env"])
        if done is not None:
            old = records.read_record(done)
            return old | {"paths": [str(done)], "skipped": True}
    prog = "python -m harness" if Path(sys.argv[0]).name == "__main__.py" else Path(sys.argv[0]).name
    record["command"] = " ".join([prog, *sys.argv[1:]])
    phase = _Phases(record["timings"])
    try:
        _run(cfg, record, phase)
        record["status"] = "ok"
    except BaseException as e:
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=20)
        raise
    finally:
        paths = [str(records.write_record(record, d)) for d in [cfg["results_dir"], *(extra_dirs or [])]]
        record["paths"] = paths
    return record


def _run(cfg: dict, record: dict, phase: _Phases) -> None:
    gc.collect()  # a previous run in this process (a multirun sweep) must not hold GPU memory
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch.manual_seed(cfg["seed"])
    device = resolve_device(cfg["device"])
    check_gpu(cfg.get("gpu") or {}, device)
    if cfg["bench"]["kernels"]["enabled"]:  # a kernel benchmark, not a model run
        from harness.metrics.kernels import run_benchmark

        k = cfg["bench"]["kernels"]
        record["kind"] = "kernels"
        def partial(metrics: dict) -> None:  # every finished backend is on disk: a killed run keeps them
            record.update(status="partial", metrics=metrics)
            records.write_record(record, cfg["results_dir"])

        with phase("kernels"):
            record["metrics"] = run_benchmark(k["models"], k["m_values"], k["backends"], device, on_progress=partial,
                                              layers=k.get("layers"))
        return
    requested = build_method(cfg["method"])
    progress = cfg.get("progress", True)
    lm_eval_tasks = None
    if cfg["bench"]["lm_eval"]["enabled"]:
        from harness.metrics import lm_eval

        with phase("lm_eval_tasks"):  # unknown task names fail here, before the model loads
            lm_eval_tasks = lm_eval.task_manager(cfg["bench"]["lm_eval"]["tasks"],
                                                 cfg["bench"]["lm_eval"]["include_path"])
    with phase("load_model"):
        loaded = load_model(_ns(cfg["model"]), device)
    model, tok = loaded.model, loaded.tokenizer
    random_weights = bool(cfg["model"].get("random_weights"))
    if tok is None and cfg["bench"]["perplexity"]["enabled"]:
        raise ValueError(f"{cfg['model']['name_or_path']} has no tokenizer (random weights from a config only): "
                         f"perplexity needs one, and means nothing on random weights; use bench=throughput "
                         f"(or bench.perplexity.enabled=false)")
    qconfig, must_quantize = _resolve_method(requested, loaded.checkpoint_method)
    record["method"] = qconfig.to_dict()
    info = describe(model)
    record["model"] = {"path": loaded.path, "architecture": info["architecture"], "parameters": info["parameters"],
                       "dtype": str(next(model.parameters()).dtype), "device": str(device),
                       "random_weights": random_weights, "config": info["config"]}
    dataset = _ns(cfg["dataset"])
    if must_quantize:
        with phase("quantize"):
            if random_weights and qconfig.needs_calibration():
                # Calibrating random weights means nothing (and GPTQ/AWQ at 7B take long): quantize into the
                # method's layout without it; the speed is the method's, the accuracy is not.
                record["method"]["speed_only"] = True
                swapped = qconfig.prepare_speed_only(model, progress=progress)
            else:
                calib = None
                if qconfig.needs_calibration():
                    calib = data.calibration_batches(tok, dataset, n=getattr(qconfig, "calibration_samples", 16),
                                                     seq_len=getattr(qconfig, "calibration_seq_len", 512),
                                                     seed=cfg["seed"])
                swapped = qconfig.prepare_model(model, calib, progress=progress)
        record["model"]["quantized_layers"] = len(swapped)
        if cfg.get("export_dir"):
            from methods.export import save_checkpoint

            with phase("export"):
                record["model"]["exported_to"] = str(save_checkpoint(model, qconfig, cfg["export_dir"], tok))
    if cfg["model"].get("fuse_projections"):
        from methods.fusion import fuse_projections

        with phase("fuse_projections"):
            record["model"]["fused_projections"] = len(fuse_projections(model))
    record["model"]["weight_bytes"] = describe(model)["weight_bytes"]
    bench = cfg["bench"]
    if bench["perplexity"]["enabled"]:
        p = bench["perplexity"]
        with phase("tokenize"):
            ids = data.load_token_ids(tok, dataset)
        max_windows = p["max_windows"]
        if max_windows is None and device.type == "cpu":
            max_windows = p["cpu_max_windows"]
        with phase("perplexity"):
            res = perplexity(model, ids, seq_len=p["seq_len"], stride=p["stride"], batch_size=p["batch_size"],
                             max_windows=max_windows, progress=progress)
        record["metrics"]["perplexity"] = res.as_dict() | {"dataset": dataset.name}
    if lm_eval_tasks is not None:
        e = bench["lm_eval"]
        with phase("lm_eval"):
            scores, details = lm_eval.evaluate(
                model, tok, e["tasks"], limit=e["limit"], num_fewshot=e["num_fewshot"], batch_size=e["batch_size"],
                max_length=e["max_length"] or bench["perplexity"]["seq_len"], bootstrap_iters=e["bootstrap_iters"],
                seed=cfg["seed"], manager=lm_eval_tasks)
        record["metrics"]["lm_eval"] = scores
        record["lm_eval"] = details
    if bench["throughput"]["enabled"]:
        t = bench["throughput"]
        with phase("throughput"):
            res = throughput(model, vocab_size=model.config.get_text_config().vocab_size,
                             batch_sizes=t["batch_sizes"], prompt_len=t["prompt_len"], gen_len=t["gen_len"],
                             warmup=t["warmup"], repeats=t["repeats"], seed=cfg["seed"],
                             decode_mode=t["decode_mode"], check_steps=t["check_steps"],
                             prefill_lens=t["prefill_lens"], prefill_batch_size=t["prefill_batch_size"],
                             prefill_mode=t["prefill_mode"], profile_steps=t["profile_steps"], pdl=t["pdl"])
        record["metrics"]["throughput"] = res.as_dict()


class _ns(dict):
    """Attribute access over a plain config dict."""

    __getattr__ = dict.__getitem__
