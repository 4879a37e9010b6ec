"""The GPTQ checkpoint layout (AutoGPTQ / GPTQModel / vLLM / HF): pack integer codes into it and read them back.

Tensors of one linear layer with K = in_features, N = out_features, G groups, P = 32 // bits codes per word:

  qweight  int32 [K / P, N]  codes packed along the input dim: row k of the [K, N] code matrix sits in word
                             k // P at bit offset (k % P) * bits (the lowest bits hold the first row)
  qzeros   int32 [G, N / P]  zero points packed along the output dim: column n in word n // P at bit offset
                             (n % P) * bits. Format v1 (`checkpoint_format: gptq`, AutoGPTQ) stores zero - 1,
                             format v2 (`gptq_v2`, GPTQModel) stores zero
  scales   fp16  [G, N]
  g_idx    int32 [K]         the group of input row k (k // group_size unless act-order reordered the groups)
  bias     fp16  [N]         only for layers with a bias

Dequantized weight (as [K, N], the transpose of nn.Linear's weight): W[k, n] = scales[g, n] * (q[k, n] -
zeros[g, n]) with g = g_idx[k]. Symmetric quantization uses zero = 2^(bits-1) (0x77777777 in v1 4-bit qzeros).

G = ceil(K / group_size) (1 for group_size -1). AutoGPTQ allows a partial last group (K = 576 at group size 128
gives 5 groups, the last of 64 rows); so do we.
"""

from __future__ import annotations

import dataclasses
import math

import torch

SUPPORTED_BITS = (4, 8)
FORMATS = ("gptq", "gptq_v2")


class GPTQFormatError(ValueError):
    """Tensors or options that do not describe a valid GPTQ layer."""


def codes_per_word(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise GPTQFormatError(f"gptq: bits={bits} is not supported; use one of {list(SUPPORTED_BITS)}")
    return 32 // bits


def num_groups(in_features: int, group_size: int) -> int:
    return 1 if group_size == -1 else math.ceil(in_features / group_size)


def default_g_idx(in_features: int, group_size: int, device=None) -> torch.Tensor:
    """g_idx without act-order: row k belongs to group k // group_size."""
    rows = torch.arange(in_features, dtype=torch.int32, device=device)
    return torch.zeros_like(rows) if group_size == -1 else rows // group_size


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 bit patterns held in int64 -> the int32 with the same bits (two's complement wrap)."""
    words = words & 0xFFFFFFFF
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack(codes: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack unsigned `bits`-bit codes into int32 words along `dim` (0: qweight layout, 1: qzeros layout)."""
    per = codes_per_word(bits)
    if codes.shape[dim] % per:
        raise GPTQFormatError(f"gptq: cannot pack {codes.shape[dim]} codes along dim {dim} into words of {per}")
    c = codes.to(torch.int64)
    if (c < 0).any() or (c >= 2**bits).any():
        raise GPTQFormatError(f"gptq: codes outside [0, {2**bits - 1}] cannot be packed in {bits} bits")
    c = c.movedim(dim, -1)
    c = c.reshape(*c.shape[:-1], c.shape[-1] // per, per)
    shifts = torch.arange(per, device=c.device, dtype=torch.int64) * bits
    words = (c << shifts).sum(-1)  # disjoint bit fields: the sum is the bitwise or
    return _to_int32(words).movedim(-1, dim).contiguous()


def unpack(words: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Inverse of `pack`: int32 words -> int32 codes in [0, 2^bits), `32 // bits` times longer along `dim`."""
    per = codes_per_word(bits)
    w = words.to(torch.int64).movedim(dim, -1) & 0xFFFFFFFF
    shifts = torch.arange(per, device=w.device, dtype=torch.int64) * bits
    c = (w.unsqueeze(-1) >> shifts) & (2**bits - 1)
    c = c.reshape(*w.shape[:-1], w.shape[-1] * per)
    return c.movedim(-1, dim).to(torch.int32).contiguous()


@dataclasses.dataclass
class GPTQLayer:
    """One layer's quantized weight, unpacked: what the quantizer produces and the loader reads back."""

    codes: torch.Tensor  # int32 [K, N], in [0, 2^bits)
    zeros: torch.Tensor  # int32 [G, N], the true zero points (v1's +1 already applied)
    scales: torch.Tensor  # fp16 [G, N]
    g_idx: torch.Tensor  # int32 [K]
    bits: int

    def dequantize(self) -> torch.Tensor:
        """float32 [N, K] (nn.Linear's weight layout)."""
        g = self.g_idx.long()
        w = self.scales.float()[g] * (self.codes - self.zeros[g]).float()
        return w.t().contiguous()


def zero_range(bits: int, checkpoint_format: str) -> tuple[int, int]:
    """Zero points a format can store: v1 stores zero - 1 in `bits` bits, so zero 0 is out of reach.

    (Readers add 1 per field, so a stored 2^bits - 1 reads as zero 2^bits in AutoGPTQ/vLLM/exllama; GPTQModel's
    word-wide `+ 0x11111111` would carry into the next field instead. We never write that value.)"""
    if checkpoint_format not in FORMATS:
        raise GPTQFormatError(f"gptq: checkpoint_format={checkpoint_format!r} is not supported; use one of "
                              f"{list(FORMATS)}")
    return (1, 2**bits - 1) if checkpoint_format == "gptq" else (0, 2**bits - 1)


def to_checkpoint(layer: GPTQLayer, checkpoint_format: str, bias: torch.Tensor | None = None) -> dict:
    """The layer's checkpoint tensors (see the module docstring)."""
    lo, hi = zero_range(layer.bits, checkpoint_format)
    if (layer.zeros < lo).any() or (layer.zeros > hi).any():
        raise GPTQFormatError(
            f"gptq: zero points must lie in [{lo}, {hi}] for checkpoint_format={checkpoint_format!r} "
            f"(got [{int(layer.zeros.min())}, {int(layer.zeros.max())}]); v1 cannot store zero 0, use gptq_v2")
    stored = layer.zeros - 1 if checkpoint_format == "gptq" else layer.zeros
    out = {
        "qweight": pack(layer.codes, layer.bits, dim=0),
        "qzeros": pack(stored, layer.bits, dim=1),
        "scales": layer.scales.to(torch.float16).contiguous(),
        "g_idx": layer.g_idx.to(torch.int32).contiguous(),
    }
    if bias is not None:
        out["bias"] = bias.detach().to(torch.float16).contiguous()
    return out


def from_checkpoint(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor,
                    bits: int, checkpoint_format: str) -> GPTQLayer:
    """Unpack a layer's checkpoint tensors, checking that they agree with each other."""
    zero_range(bits, checkpoint_format)
    per = codes_per_word(bits)
    k, n = qweight.shape[0] * per, qweight.shape[1]
    groups = scales.shape[0]
    if tuple(qzeros.shape) != (groups, n // per) or tuple(scales.shape) != (groups, n) or g_idx.numel() != k:
        raise GPTQFormatError(
            f"gptq: inconsistent shapes qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, scales "
            f"{tuple(scales.shape)}, g_idx {tuple(g_idx.shape)} for bits={bits}")
    if g_idx.numel() and (int(g_idx.min()) < 0 or int(g_idx.max()) >= groups):
        raise GPTQFormatError(f"gptq: g_idx values must lie in [0, {groups}) (there are {groups} groups of "
                              f"scales); got [{int(g_idx.min())}, {int(g_idx.max())}]")
    zeros = unpack(qzeros, bits, dim=1)
    if checkpoint_format == "gptq":
        zeros = zeros + 1
    return GPTQLayer(codes=unpack(qweight, bits, dim=0), zeros=zeros, scales=scales.to(torch.float16),
                     g_idx=g_idx.to(torch.int32), bits=bits)
