"""Which GPU a run gets: the `gpu=` preset's sanity check, and a file-lock pool that gives each of several
local jobs (the joblib launcher's workers) a GPU of its own."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch


class GpuMismatchError(RuntimeError):
    """The run asked for one GPU model (gpu=h100) and the machine has another (or none)."""


def check_gpu(gpu: dict, device: torch.device) -> None:
    """Fail unless `device` is a CUDA device whose name contains gpu["device_name"] (no check when that is None)."""
    want = gpu.get("device_name")
    if not want:
        return
    if device.type != "cuda":
        raise GpuMismatchError(f"gpu={gpu['name']} expects a CUDA device named like {want!r}, but the run is on "
                               f"{device} (no GPU visible or device=cpu). Use gpu=auto, or run on an {want}.")
    found = torch.cuda.get_device_name(device)
    if want.lower() not in found.lower():
        raise GpuMismatchError(f"gpu={gpu['name']} expects a device named like {want!r}, but {device} is {found!r}. "
                               f"Use gpu=auto (or the preset of this GPU in conf/gpu/).")


def _lock_dir() -> Path:
    return Path(os.environ.get("QUANTBENCH_GPU_LOCK_DIR")
                or Path(tempfile.gettempdir()) / f"quantbench-gpu-locks-{os.getuid()}")


@contextlib.contextmanager
def claim(n: int | None = None, lock_dir: str | os.PathLike | None = None, poll_s: float = 1.0,
          timeout_s: float | None = None) -> Iterator[int | None]:
    """Hold one of the `n` visible GPUs (default: all CUDA devices) exclusively; yields its index, or None when
    there is no GPU. An flock on `<lock_dir>/gpu<id>.lock` marks it taken; the kernel drops the lock when the
    holder exits or dies, so a killed job never leaves a GPU claimed. Waits (polling) while all are taken."""
    n = torch.cuda.device_count() if n is None else n
    if n == 0:
        yield None
        return
    # Name locks by physical id where CUDA_VISIBLE_DEVICES remaps indices, so differently masked jobs agree.
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    ids = visible[:n] if len(visible) >= n else [str(i) for i in range(n)]
    directory = Path(lock_dir) if lock_dir else _lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for index, gpu_id in enumerate(ids):
            f = open(directory / f"gpu{gpu_id}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                f.truncate(0)
                f.write(f"{os.getpid()}\n")
                f.flush()
                yield index
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"all {n} GPUs stayed claimed for {timeout_s}s (locks in {directory})")
        time.sleep(poll_s)


@contextlib.contextmanager
def use_pool(enabled: bool) -> Iterator[int | None]:
    """With `enabled`, claim a free GPU and make it the current CUDA device for the run (no-op on CPU)."""
    if not enabled:
        yield None
        return
    with claim() as index:
        if index is not None:
            torch.cuda.set_device(index)
        try:
            yield index
        finally:
            if index is not None:
                # joblib reuses worker processes: give this GPU's cached memory back before the next point,
                # which may land on another GPU, while this one goes to another worker.
                gc.collect()
                torch.cuda.empty_cache()
