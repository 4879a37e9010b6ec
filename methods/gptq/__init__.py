"""GPTQ: post-training weight quantization with second-order error feedback (and RTN in the same layout)."""

from methods.gptq.method import GPTQConfig, RTNConfig

__all__ = ["GPTQConfig", "RTNConfig"]
