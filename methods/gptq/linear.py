"""The GPTQ linear method: registers a layer's checkpoint tensors, repacks them for the W4A16 kernel after
loading, and computes y = x W^T with kernels.w4a16.

What a layer holds after process_weights_after_loading (the kernel's canonical layout, kernels/w4a16.py):
  qweight  int32 [K / P, N]  the checkpoint's qweight unchanged (the kernel reads GPTQ's packing as is)
  scales   fp16  [G, N]      unchanged
  zeros    uint8/int16 [G, N] or None  the true zero points (v1's +1 applied) as integer codes, which the kernel
                             multiplies by their scales in fp32 (exact), so its q * s - z * s equals s * (q - z), the
                             weight the checkpoint describes; None for a symmetric layer (every z = 2^(bits-1)): the
                             kernel uses that constant and reads nothing (`kernels.w4a16.zero_codes`)
  g_idx    int32 [K]         unchanged; handed to the kernel only when it differs from k // group_size (act-order)
  qzeros   int32 [G, N / P]  unchanged and unused by the kernel: kept so export writes the checkpoint back bit for
                             bit (it is 1/group_size of qweight's size)

Shapes: K and N must be multiples of 32 / bits (the checkpoint packing itself needs that); create_weights says so.
The kernel serves every other shape and g_idx. backend=torch (or a CPU tensor under backend=auto) runs the
kernel module's plain-torch reference instead of Triton.
"""

from __future__ import annotations

import torch

from kernels import w4a16
from methods.base import LinearMethodBase, QuantLinear
from methods.gptq import format as fmt
from methods.loader import CheckpointError

CHECKPOINT_KEYS = ("qweight", "qzeros", "scales", "g_idx")


def zeros_of(layer: QuantLinear) -> torch.Tensor | None:
    """The zero codes the kernel reads; None for a symmetric layer (a fused one of symmetric parts has none)."""
    return getattr(layer, "zeros", None)


def w4a16_apply(layer: QuantLinear, x: torch.Tensor, g_idx: torch.Tensor | None, group_size: int, bits: int,
                backend: str, glu: bool) -> torch.Tensor:
    """y = x W^T (+ bias) of a layer in the W4A16 kernel's layout (GPTQ and AWQ both hold it); under torch.compile
    one opaque op (no graph break)."""
    bias = layer.bias.to(x.dtype) if layer.bias is not None else None
    if torch.compiler.is_compiling():
        return w4a16.w4a16_matmul_op(x, layer.qweight, layer.scales, zeros_of(layer), g_idx, bias, group_size, bits,
                                     backend, glu)
    return w4a16.w4a16_matmul(x, layer.qweight, layer.scales, zeros_of(layer), g_idx, group_size, bits, bias,
                              backend=backend, validate=False, glu=glu)


def fill_symmetric_zeros(parts: list[dict[str, torch.Tensor]], bits: int) -> list[dict[str, torch.Tensor]]:
    """Fusion parts (`LinearMethodBase.fusion_parts`) where symmetric parts (no zeros) meet asymmetric ones: the
    symmetric parts get their constant 2^(bits-1) as codes, so the joined zeros line up."""
    codes = [p["zeros"] for p in parts if "zeros" in p]
    if codes and len(codes) < len(parts):
        dtype = torch.int16 if any(c.dtype == torch.int16 for c in codes) else torch.uint8
        for p in parts:
            p["zeros"] = p["zeros"].to(dtype) if "zeros" in p else torch.full_like(p["scales"], 2 ** (bits - 1),
                                                                                 dtype=dtype)
    return parts


class GPTQLinearMethod(LinearMethodBase):
    # Fused siblings share their input, so act-order gives them one g_idx (checked equal); symmetric parts (no
    # zeros) joined with asymmetric ones get their constant as codes (`fusion_parts`).
    fuse_dims = {"qweight": 1, "qzeros": 1, "scales": 1, "zeros": 1}
    glu_tensors = ("qweight", "scales", "zeros")  # what the kernel reads; fuse_glu drops qzeros (export only)

    def __init__(self, bits: int, group_size: int, checkpoint_format: str, backend: str = "auto"):
        self.bits, self.group_size = bits, group_size
        self.checkpoint_format, self.backend = checkpoint_format, backend
        self.act_order = False  # set per layer by process_weights_after_loading

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

    def process_weights_after_loading(self, layer: QuantLinear) -> None:
        try:
            q = fmt.from_checkpoint(layer.qweight, layer.qzeros, layer.scales, layer.g_idx, self.bits,
                                    self.checkpoint_format)
        except fmt.GPTQFormatError as e:
            raise CheckpointError(f"{e}; the tensors do not match the checkpoint's quantization_config") from None
        if not torch.isfinite(layer.scales).all():
            raise CheckpointError("gptq: scales hold inf/nan; the checkpoint is corrupt")
        layer.register("zeros", w4a16.zero_codes(q.zeros, self.bits))
        default = fmt.default_g_idx(layer.in_features, self.group_size, device=layer.g_idx.device)
        # Contiguous groups take the kernel's faster path (g_idx=None); act-order passes g_idx.
        self.act_order = not torch.equal(layer.g_idx.data, default)

    def fusion_parts(self, layers: list[QuantLinear]) -> list[dict[str, torch.Tensor]]:
        return fill_symmetric_zeros(super().fusion_parts(layers), self.bits)

    def checkpoint_tensors(self, layer: QuantLinear) -> dict[str, torch.Tensor]:
        """The layer's tensors in the checkpoint layout (what export writes)."""
        out = {key: getattr(layer, key).detach() for key in CHECKPOINT_KEYS}
        if layer.bias is not None:
            out["bias"] = layer.bias.detach().to(torch.float16)
        return out

    def apply(self, layer: QuantLinear, x: torch.Tensor, glu: bool = False) -> torch.Tensor:
        g_idx = layer.g_idx if self.act_order else None
        return w4a16_apply(layer, x, g_idx, self.group_size, self.bits, self.backend, glu)

    def apply_glu(self, layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        return self.apply(layer, x, glu=True)
