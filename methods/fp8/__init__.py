"""FP8 method: online quantization, HF fp8 checkpoints, static calibration."""

from methods.fp8.method import FP8Config, FP8LinearMethod

__all__ = ["FP8Config", "FP8LinearMethod"]
