"""SM clock and board power while kernels are timed, read through NVML (`pynvml`, from the nvidia-ml-py package in
the `gpu` extra). The kernel benchmark stores them beside each timing, so a point timed at a lowered clock says
so: the same block-FP8 kernel took 4.36 ms in the tuner, 4.76 ms alone and 5.65 ms interleaved with cuBLAS and
`_scaled_mm` (H100, tenth session), and nothing in those records said why. Without pynvml, or off CUDA, sampling
is off and `summary()` is None.

The window is the whole `with` block: for a benchmark point that is its warm-up, graph capture and timed replays
together, so on a point of a few milliseconds the samples describe more than the timed replays. Power is read with
each clock sample: NVML's instantaneous board power where the driver has it (NVML_FI_DEV_POWER_INSTANT), else its
power reading (`power_source` "average": a one-second average on recent GPUs). The energy counter, used first,
moves too coarsely for windows of 50-500 ms: on the H100 it gave 0 W on one point and 1078 W, above the board's
700 W limit, on another (eleventh session)."""

from __future__ import annotations

import functools
import statistics
import threading

import torch

PERIOD_S = 0.01  # one clock reading per 10 ms: an H100 moves its clock on a scale of milliseconds to tens of them


@functools.cache
def _nvml():
    """The pynvml module, initialised once per process, or None where NVML cannot be reached."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _handle(device: torch.device):
    """(pynvml, handle) for a CUDA device, or None. NVML numbers devices physically; torch maps its index through
    CUDA_VISIBLE_DEVICES; where it cannot, sampling is off rather than reading another GPU."""
    nvml = _nvml() if device.type == "cuda" else None
    if nvml is None:
        return None
    try:
        return nvml, nvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(device))
    except Exception:
        return None


class GpuSampler:
    """Context manager: a thread reads the SM clock (MHz) and the board power (W) every `period_s` while the block
    runs; `summary()` gives the clock's median/min/max and the power's median/max, None if NVML is unavailable or
    nothing was read. A failing clock reading stops the sampling; a failing power reading only that reading."""

    def __init__(self, device: torch.device, period_s: float = PERIOD_S):
        self.period_s = period_s
        self.clock_mhz: list[float] = []
        self.power_w: list[float] = []
        self.power_source: str | None = None  # "instant" or "average", decided by the first reading
        self._nvml = _handle(torch.device(device))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _clock(self) -> None:
        nvml, handle = self._nvml
        try:
            self.clock_mhz.append(float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)))
        except Exception:
            self._stop.set()
            return
        watts = self._power(nvml, handle)
        if watts is not None:
            self.power_w.append(watts)

    def _power(self, nvml, handle) -> float | None:
        """Board power now (W): the instantaneous field where the driver answers it, else the averaged reading."""
        if self.power_source in (None, "instant"):
            try:
                v = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
                if v.nvmlReturn == 0:
                    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}[v.valueType]
                    self.power_source = "instant"
                    return float(getattr(v.value, member)) / 1000.0  # milliwatts
            except Exception:
                pass
            if self.power_source == "instant":
                return None
        try:
            watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # milliwatts
        except Exception:
            return None
        self.power_source = "average"
        return watts

    def _run(self) -> None:
        while not self._stop.is_set():
            self._clock()
            self._stop.wait(self.period_s)

    def __enter__(self) -> GpuSampler:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=1.0)  # a hung NVML call leaves a daemon thread behind, not a hung benchmark
        if not self._thread.is_alive():
            self._clock()  # one reading as the timed work ends

    def summary(self) -> dict | None:
        if not self.clock_mhz:
            return None
        out = {"samples": len(self.clock_mhz),
               "sm_clock_mhz": {"median": statistics.median(self.clock_mhz), "min": min(self.clock_mhz),
                                "max": max(self.clock_mhz)}}
        if self.power_w:
            out["power_w"] = {"median": round(statistics.median(self.power_w), 1), "max": round(max(self.power_w), 1),
                              "source": self.power_source}
        return out
