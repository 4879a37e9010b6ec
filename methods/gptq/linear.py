"""The GPTQ linear method: registers a layer's checkpoint tensors, checks them after loading, computes y = x W^T.

PROVISIONAL: plain-torch dequantize-then-matmul until kernels/w4a16.py lands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import LinearMethodBase, QuantLinear
from methods.gptq import format as fmt
from methods.loader import CheckpointError


class GPTQLinearMethod(LinearMethodBase):
    def __init__(self, bits: int, group_size: int, checkpoint_format: str, backend: str = "auto"):
        self.bits, self.group_size = bits, group_size
        self.checkpoint_format, self.backend = checkpoint_format, backend

    def create_weights(self, layer: QuantLinear) -> None:
        per = fmt.codes_per_word(self.bits)
        k, n = layer.in_features, layer.out_features
        if k % per or n % per:
            raise fmt.GPTQFormatError(
                f"gptq: {self.bits}-bit packing needs in_features and out_features divisible by {per}, got "
                f"in={k}, out={n}; add the layer to modules_to_not_convert")
        groups = fmt.num_groups(k, self.group_size)
        layer.register("qweight", layer.new_tensor((k // per, n), torch.int32))
        layer.register("qzeros", layer.new_tensor((groups, n // per), torch.int32))
        layer.register("scales", layer.new_tensor((groups, n), torch.float16))
        layer.register("g_idx", layer.new_tensor((k,), torch.int32))

    def unpacked(self, layer: QuantLinear) -> fmt.GPTQLayer:
        return fmt.from_checkpoint(layer.qweight, layer.qzeros, layer.scales, layer.g_idx, self.bits,
                                   self.checkpoint_format)

    def process_weights_after_loading(self, layer: QuantLinear) -> None:
        try:
            q = self.unpacked(layer)
        except fmt.GPTQFormatError as e:
            raise CheckpointError(f"{e}; the checkpoint does not match its quantization_config") from None
        if not torch.isfinite(q.scales).all():
            raise CheckpointError("gptq: scales contain inf/nan; the checkpoint is corrupt")

    def checkpoint_tensors(self, layer: QuantLinear) -> dict[str, torch.Tensor]:
        """The layer's tensors in the checkpoint layout (what export writes)."""
        out = {k: getattr(layer, k).detach() for k in ("qweight", "qzeros", "scales", "g_idx")}
        if layer.bias is not None:
            out["bias"] = layer.bias.detach().to(torch.float16)
        return out

    def apply(self, layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        w = self.unpacked(layer).dequantize().to(x.dtype)
        return F.linear(x, w, layer.bias)
