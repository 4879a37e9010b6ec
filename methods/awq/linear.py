"""The AWQ linear method: registers a layer's AutoAWQ GEMM tensors, repacks them for the W4A16 kernel after
loading, and computes y = x W^T with kernels.w4a16.

What a layer holds after process_weights_after_loading:
  qweight  int32 [K / 8, N]  the kernel's canonical layout (kernels/w4a16.py: packed along K, no interleave), the
                             checkpoint's [K, N / 8] codes unpacked (AWQ order) and repacked: a lossless permutation
  scales   fp16  [G, N]      unchanged
  zeros    uint8 [G, N] or None  zero-point codes, which the kernel multiplies by the scales in fp32 (exact), so its
                             q * s - z * s is (None where every zero is 8: kernels.w4a16.zero_codes)
                             the checkpoint's (q - z) * s
  qzeros   int32 [G, N / 8]  unchanged and unused by the kernel: kept so export writes the checkpoint back bit for bit
"""

from __future__ import annotations

import warnings

import torch

from kernels import w4a16
from methods.awq import format as fmt
from methods.base import LinearMethodBase, QuantLinear
from methods.gptq.linear import fill_symmetric_zeros, w4a16_apply
from methods.loader import CheckpointError


class AWQLinearMethod(LinearMethodBase):
    fuse_dims = {"qweight": 1, "qzeros": 1, "scales": 1, "zeros": 1}  # the repacked (canonical) layout
    glu_tensors = ("qweight", "scales", "zeros")  # what the kernel reads; fuse_glu drops qzeros (export only)

    def __init__(self, group_size: int, backend: str = "auto"):
        self.group_size, self.backend = group_size, backend
        self.repacked = False  # qweight is in the kernel layout (set by process_weights_after_loading)

    def create_weights(self, layer: QuantLinear) -> None:
        k, n = layer.in_features, layer.out_features
        fmt.check_shape(k, n)
        groups = fmt.num_groups(k, self.group_size)
        layer.register("qweight", layer.new_tensor((k, n // fmt.PER_WORD), torch.int32))
        layer.register("qzeros", layer.new_tensor((groups, n // fmt.PER_WORD), torch.int32))
        layer.register("scales", layer.new_tensor((groups, n), torch.float16))

    def process_weights_after_loading(self, layer: QuantLinear) -> None:
        if self.repacked:
            return
        try:
            q = fmt.from_checkpoint(layer.qweight, layer.qzeros, layer.scales, self.group_size)
        except fmt.AWQFormatError as e:
            raise CheckpointError(f"{e}; the tensors do not match the checkpoint's quantization_config") from None
        if not torch.isfinite(layer.scales).all():
            raise CheckpointError("awq: scales hold inf/nan; the checkpoint is corrupt")
        layer.register("qweight", w4a16.pack_int_weights(q.codes, fmt.BITS))
        layer.register("zeros", w4a16.zero_codes(q.zeros, fmt.BITS))
        self.repacked = True

    def fusion_parts(self, layers: list[QuantLinear]) -> list[dict[str, torch.Tensor]]:
        return fill_symmetric_zeros(super().fusion_parts(layers), fmt.BITS)

    def checkpoint_tensors(self, layer: QuantLinear) -> dict[str, torch.Tensor]:
        """The layer's tensors in the AutoAWQ GEMM layout (what export writes)."""
        if fmt.has_partial_group(layer.in_features, self.group_size):
            warnings.warn(f"awq: in_features={layer.in_features} is not a multiple of group_size={self.group_size}; "
                          f"this checkpoint loads here but AutoAWQ, HF and vLLM refuse a short last group "
                          f"(quantize with a group_size dividing every layer's in_features for them)", stacklevel=2)
        qweight = layer.qweight.detach()
        if self.repacked:
            qweight = fmt.pack_columns(w4a16.unpack_int_weights(qweight, fmt.BITS, layer.in_features))
        out = {"qweight": qweight, "qzeros": layer.qzeros.detach(), "scales": layer.scales.detach()}
        if layer.bias is not None:
            out["bias"] = layer.bias.detach().to(torch.float16)
        return out

    def apply(self, layer: QuantLinear, x: torch.Tensor, glu: bool = False) -> torch.Tensor:
        if not self.repacked:
            raise RuntimeError("awq: process_weights_after_loading has not run on this layer")
        return w4a16_apply(layer, x, None, self.group_size, fmt.BITS, self.backend, glu)

    def apply_glu(self, layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        return self.apply(layer, x, glu=True)
