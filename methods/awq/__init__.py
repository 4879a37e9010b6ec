"""AWQ: activation-aware weight quantization into the AutoAWQ GEMM checkpoint layout."""

from methods.awq.method import AWQConfig

__all__ = ["AWQConfig"]
