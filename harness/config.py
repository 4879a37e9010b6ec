"""Typed run configuration (Hydra structured configs), registered once; conf/ holds only YAML presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

import methods

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
DEFAULT_DATASET = "wiki"


@dataclass
class ModelConf:
    # A hub name, a local directory (HF layout), or `embedded:<name>` for a model the project installs offline.
    name_or_path: str = DEFAULT_MODEL
    # auto = bfloat16 on GPU, float32 on CPU.
    dtype: str = "auto"
    revision: Optional[str] = None
    trust_remote_code: bool = False
    # Build the architecture from its config with random weights (for speed runs at real sizes).
    random_weights: bool = False
    # After quantizing (and export), fuse q/k/v and gate/up projections into one GEMM each, as serving engines
    # do (methods/fusion.py): same outputs, fewer and wider GEMMs.
    fuse_projections: bool = False
    # sdpa or eager (transformers' own), or split_kv: our split-KV decode attention (kernels/attention.py) for
    # single-token queries on CUDA, SDPA for prefill and elsewhere (harness/attention.py).
    attn_implementation: str = "sdpa"


@dataclass
class DatasetConf:
    name: str = DEFAULT_DATASET
    # embedded: the corpus the project installs offline; hf: a `datasets` dataset (hub name or local path);
    # text: a plain UTF-8 text file at `path`.
    source: str = "embedded"
    path: Optional[str] = None
    config_name: Optional[str] = None
    split: str = "test"
    text_column: str = "text"
    # How records are joined before tokenizing once (GPTQ/AWQ papers join WikiText-2 test with "\n\n").
    join: str = "\n\n"


@dataclass
class PerplexityConf:
    enabled: bool = True
    seq_len: int = 2048
    # Tokens the window advances by; None = seq_len (non-overlapping, as the GPTQ/AWQ papers evaluate).
    stride: Optional[int] = None
    batch_size: int = 1
    # Evaluate only the first N windows (None = the whole corpus). The record says how many tokens were scored.
    max_windows: Optional[int] = None
    # On CPU, when max_windows is None, stop after this many windows (the full corpus takes ~25 min on 2 cores);
    # set null to score everything on CPU too.
    cpu_max_windows: Optional[int] = 16


@dataclass
class KernelBenchConf:
    """GEMM backends side by side on real linear-layer shapes (harness/metrics/kernels.py); replaces the model
    run: no model is loaded."""
    enabled: bool = False
    # Shape sets of harness.metrics.kernels.MODEL_SHAPES (qkv, o, gate_up, down of each).
    models: list = field(default_factory=lambda: ["llama-2-7b", "llama-3-8b", "llama-3-70b"])
    m_values: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096])
    # Backend names to time (None: all of them).
    backends: Optional[list] = None
    # Layer names to time (qkv, o, gate_up, down; None: all four), e.g. to finish the layers a run stopped before.
    layers: Optional[list] = None


@dataclass
class ThroughputConf:
    """harness/metrics/throughput.py: one point per batch size (prefill of batch x prompt_len tokens, then gen_len
    greedy decode steps over a static KV cache), plus prefill-only points at prefill_lens."""

    enabled: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    prompt_len: int = 128
    gen_len: int = 32
    # Prefill-only points at these prompt lengths (batch prefill_batch_size): long prompts whose KV cache would not
    # fit at the large decode batch sizes.
    prefill_lens: list[int] = field(default_factory=list)
    prefill_batch_size: int = 1
    warmup: int = 1
    repeats: int = 3
    # auto (cuda_graph on CUDA, eager on CPU), cuda_graph, compile (torch.compile; on CUDA its step replayed from
    # a CUDA graph) or eager.
    decode_mode: str = "auto"
    # Prefill-only points (prefill_lens): auto (cuda_graph on CUDA, eager on CPU), cuda_graph, compile
    # (torch.compile, replayed from a CUDA graph on CUDA) or eager. A decode point's prefill is eager.
    prefill_mode: str = "auto"
    # Greedy steps compared between eager and graph/compiled decode at each point (0: no check).
    check_steps: int = 4
    # Decode steps profiled at each point after the timed runs (0: none): per-step time by category (GEMM/GEMV,
    # attention, activation quantization, other) and the top kernels, in the point's step_profile.
    profile_steps: int = 0
    # decode_mode=compile on an sm_90+ GPU: the compiled step's kernels (Inductor's and ours) launch with
    # programmatic dependent launch, each starting while the previous one finishes (as vLLM's full CUDA graphs).
    pdl: bool = False


@dataclass
class LmEvalConf:
    """lm-evaluation-harness tasks on the run's (quantized) model; see harness/metrics/lm_eval.py."""

    enabled: bool = False
    # Offline tasks built from the embedded corpus (harness/eval_tasks.py), or any lm-eval task / group name
    # (hub tasks such as hellaswag need the hub: HF_HUB_OFFLINE unset).
    tasks: list[str] = field(default_factory=lambda: ["qb_wiki_lastword", "qb_wiki_continuation", "qb_wiki_ppl"])
    # The first N items of each task (None = all).
    limit: Optional[int] = None
    # None = each task's own default (0 for the offline tasks).
    num_fewshot: Optional[int] = None
    batch_size: int = 16
    # Tokens per forward pass (rolling windows of the perplexity tasks); None = bench.perplexity.seq_len.
    max_length: Optional[int] = None
    # A folder of your own lm-eval task YAMLs, searched besides the offline tasks and lm-eval's registry.
    include_path: Optional[str] = None
    # Resamples for the stderr of perplexity-type metrics (lm-eval's default; 0 = no stderr for those).
    bootstrap_iters: int = 100000


@dataclass
class BenchConf:
    name: str = "default"
    perplexity: PerplexityConf = field(default_factory=PerplexityConf)
    throughput: ThroughputConf = field(default_factory=ThroughputConf)
    lm_eval: LmEvalConf = field(default_factory=LmEvalConf)
    kernels: KernelBenchConf = field(default_factory=KernelBenchConf)


@dataclass
class GpuConf:
    """The GPU a run expects (sweep axis `gpu=`): a sanity check plus datasheet figures kept with the record.

    The peak figures are *datasheet* reference values (dense, no sparsity), not measurements; kernel records
    carry the rates measured on the machine (harness.metrics.kernels.measure_roofline)."""

    name: str = "auto"
    # Substring the CUDA device name must contain (e.g. "H100"); None = any device, CPU included.
    device_name: Optional[str] = None
    datasheet_hbm_gbps: Optional[float] = None
    datasheet_bf16_tflops: Optional[float] = None
    datasheet_fp8_tflops: Optional[float] = None


@dataclass
class RunConf:
    model: ModelConf = MISSING
    method: Any = MISSING
    dataset: DatasetConf = MISSING
    bench: BenchConf = MISSING
    gpu: GpuConf = MISSING
    device: str = "auto"
    seed: int = 0
    # Result records land here (relative to the directory the command runs in) and in Hydra's run dir.
    results_dir: str = "results"
    # Save the quantized model here as a checkpoint in its method's standard layout (loads back with
    # model.name_or_path=<dir>); None = don't save.
    export_dir: Optional[str] = None
    progress: bool = True
    # Re-run even when results_dir already holds an ok record of this config, code version and machine.
    force: bool = False
    # Claim a free local GPU (harness/gpu_pool.py file lock) for this run; set by `+launcher=local_gpus`.
    gpu_pool: bool = False
    # Multirun: each job in a fresh Python process (None: when a CUDA GPU is visible). On an H100, batch-1 decode
    # of the fourth and later runs of one process came out up to 6% slower than the same run alone
    # (results/h100/README.md), so GPU sweeps isolate their jobs.
    isolate: Optional[bool] = None


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConf)
    cs.store(group="model", name="base_model", node=ModelConf)
    cs.store(group="dataset", name="base_dataset", node=DatasetConf)
    cs.store(group="bench", name="default", node=BenchConf)
    cs.store(group="bench", name="base_bench", node=BenchConf)
    cs.store(group="gpu", name="base_gpu", node=GpuConf)
    # ${visible_gpus:} = CUDA devices this process sees (at least 1): n_jobs of the local_gpus launcher preset.
    OmegaConf.register_new_resolver("visible_gpus", _visible_gpus, replace=True)
    for name in methods.known_methods():
        cls = methods.get_method_class(name)
        if cls.selectable:
            cs.store(group="method", name=name, node=cls)


def _visible_gpus() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def method_options(method_cfg: Any) -> dict:
    """The method group as a plain dict (plain dict, OmegaConf node or dataclass)."""
    from omegaconf import DictConfig, OmegaConf

    if dataclasses.is_dataclass(method_cfg):
        return dataclasses.asdict(method_cfg)
    if isinstance(method_cfg, DictConfig):
        return OmegaConf.to_container(method_cfg, resolve=True)
    return dict(method_cfg)
