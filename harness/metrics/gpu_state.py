"""SM clock and board power while kernels are timed, sampled through NVML (`pynvml`, from the nvidia-ml-py
package in the `gpu` extra). The kernel benchmark stores them beside each timing, so a point timed at a lowered
clock says so: the same block-FP8 kernel took 4.36 ms in the tuner, 4.76 ms alone and 5.65 ms interleaved with
cuBLAS and `_scaled_mm` (H100, tenth session), and nothing in those records said why. Without pynvml, or off
CUDA, sampling is off and `summary()` is None."""

from __future__ import annotations

import statistics
import threading

import torch

PERIOD_S = 0.01  # one sample per 10 ms: an H100 adjusts its clock on a scale of milliseconds to tens of them


def _nvml_handle(device: torch.device):
    """(pynvml, handle) for a CUDA device, or None where NVML cannot be reached."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:  # NVML numbers devices physically; CUDA_VISIBLE_DEVICES may renumber them for CUDA
            index = torch.cuda._get_nvml_device_index(device)
        except Exception:
            index = device.index or 0
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None


class GpuSampler:
    """Context manager: a thread samples the SM clock (MHz) and power (W) every `period_s` while the block runs;
    `summary()` gives their median/min/max, None if NVML is unavailable or nothing was sampled."""

    def __init__(self, device: torch.device, period_s: float = PERIOD_S):
        self.period_s = period_s
        self.clock_mhz: list[float] = []
        self.power_w: list[float] = []
        self._nvml = _nvml_handle(torch.device(device))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        nvml, handle = self._nvml
        try:
            self.clock_mhz.append(float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)))
            self.power_w.append(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)  # NVML reports milliwatts
        except Exception:  # a GPU or driver without one of the readings: stop, keeping what was read
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def __enter__(self) -> GpuSampler:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()  # at least one reading, taken as the timed work ends
            self._stop.clear()

    def summary(self) -> dict | None:
        if not self.clock_mhz:
            return None
        n = min(len(self.clock_mhz), len(self.power_w))
        out = {"samples": len(self.clock_mhz),
               "sm_clock_mhz": {"median": statistics.median(self.clock_mhz), "min": min(self.clock_mhz),
                                "max": max(self.clock_mhz)}}
        if n:
            out["power_w"] = {"median": round(statistics.median(self.power_w), 1), "max": round(max(self.power_w), 1)}
        return out
