"""Per-GPU tuned tables the kernels share: JSON files {gpu name: {tuning_key: config}} committed under
kernels/tuned/, written by a kernel's tuner (`kernels.w4a16_tune`, `kernels.fp8_tune`) and read at launch, so a
user's first run on a tuned GPU needs no search. An entry also carries its measurements (median_ms, ...): a
lookup hands out only the kernel's config keys."""

from __future__ import annotations

import functools
import json
import os
import tempfile

import torch


def m_bucket(M: int) -> int:
    """Tuning key for M: the next power of two (4096 and above share one bucket)."""
    return min(1 << max(0, M - 1).bit_length(), 4096)


@functools.cache
def load_table(path: str) -> dict:
    """The table at `path`; absent or empty: {} (the kernel's heuristics apply)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@functools.cache
def gpu_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


@functools.cache
def num_sms(index: int) -> int:
    """Streaming multiprocessors of CUDA device `index` (the kernels size their grids by it)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


# Where a kernel asks for it (same_chip=True: W4A16, whose H100 entries were checked on an H200), a GPU's key without
# an entry of its own takes the entry of the GPU named here, built on the same chip with as many SMs and the same
# clocks: the H200 SXM is the H100 SXM's GH100 (132 SMs) with more and faster HBM.
SAME_CHIP = {"NVIDIA H200": "NVIDIA H100 80GB HBM3"}


def entry(table: dict, gpu: str, key: str, config_keys, same_chip: bool = False) -> dict | None:
    """The config keys of the table's entry for this GPU and key (same_chip: else for its `SAME_CHIP` GPU), or
    None."""
    cfg = table.get(gpu, {}).get(key)
    if cfg is None and same_chip:
        cfg = table.get(SAME_CHIP.get(gpu, ""), {}).get(key)
    return {k: v for k, v in cfg.items() if k in config_keys} if cfg else None


def lookup(path: str, device, key: str, config_keys, gpu_name=gpu_name, same_chip: bool = False) -> dict | None:
    """The entry of the table at `path` for `device`'s GPU (None off CUDA; `entry`). gpu_name: the kernel module's
    name of the GPU (tests replace it there)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return entry(load_table(path), gpu_name(device.index or 0), key, config_keys, same_chip)


def open_table(out: str, merge: str | None) -> dict:
    """A tuner's starting table: `merge` (e.g. the committed one), else `out` if it exists, else empty."""
    src = merge or (out if os.path.exists(out) else None)
    return load_table.__wrapped__(src) if src else {}


def write_table(path: str, table: dict) -> None:
    """Write atomically (a tuner stopped mid-write leaves the previous table)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
