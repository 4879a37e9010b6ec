"""The AutoAWQ GEMM checkpoint layout (`quant_method: awq`, `version: gemm`; read by AutoAWQ, HF and vLLM).

Tensors of one linear layer with K = in_features, N = out_features, G = ceil(K / group_size) groups (1 for -1):

  qweight  int32 [K, N / 8]  4-bit codes packed along the OUTPUT dim, 8 columns per word, interleaved
  qzeros   int32 [G, N / 8]  4-bit zero points, packed the same way
  scales   fp16  [G, N]
  bias     fp16  [N]         only for layers with a bias

Word w of a row holds columns n = 8w .. 8w+7; nibble j (bits 4j .. 4j+3) holds column 8w + AWQ_ORDER[j]:

      bit 31                                                                bit 0
      | n=8w+7 | n=8w+5 | n=8w+3 | n=8w+1 | n=8w+6 | n=8w+4 | n=8w+2 | n=8w+0 |
        31..28   27..24   23..20   19..16   15..12   11..8    7..4     3..0

so column n is read at shift 4 * AWQ_REVERSE_ORDER[n % 8]: codes 0, 1, ..., 7 in columns 0..7 pack to 0x75316420
(AutoAWQ's WQLinear_GEMM.from_linear packs with AWQ_ORDER; its dequantize_gemm unpacks with AWQ_REVERSE_ORDER).

Dequantized weight (as [K, N], the transpose of nn.Linear's weight): W[k, n] = (q[k, n] - z[g, n]) * s[g, n],
g = k // group_size. Only asymmetric 4-bit (`zero_point: true`) exists in this layout.

AutoAWQ, HF and vLLM need K to be a multiple of group_size. We also read and write a short last group (as
GPTQ checkpoints allow), so that e.g. K = 576 (SmolLM2-135M) works at group size 128; `has_partial_group` says
when a layer needs that extension, and export warns that other readers will refuse such a checkpoint.
"""

from __future__ import annotations

import math

import torch

from methods.gptq.format import GPTQLayer, default_g_idx

BITS = 4
PER_WORD = 32 // BITS
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble j holds column AWQ_ORDER[j] of its 8
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # column c sits in nibble AWQ_REVERSE_ORDER[c]


class AWQFormatError(ValueError):
    """Tensors or options that do not describe a valid AutoAWQ GEMM layer."""


def num_groups(in_features: int, group_size: int) -> int:
    return 1 if group_size == -1 else math.ceil(in_features / group_size)


def has_partial_group(in_features: int, group_size: int) -> bool:
    """Whether the last group is short: fine here, refused by AutoAWQ / HF / vLLM."""
    return group_size != -1 and in_features % group_size != 0


def check_shape(in_features: int, out_features: int) -> None:
    """Raise if a layer of this shape cannot be stored in the layout (and served by the W4A16 kernel)."""
    if out_features % PER_WORD or in_features % PER_WORD:
        raise AWQFormatError(f"awq: in_features={in_features} and out_features={out_features} must be multiples of "
                             f"{PER_WORD} (8 codes per int32 word); add the layer to modules_to_not_convert")


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 bit patterns held in int64 -> the int32 with the same bits."""
    words = words & 0xFFFFFFFF
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_columns(codes: torch.Tensor) -> torch.Tensor:
    """Codes [R, N] in [0, 16) -> int32 words [R, N / 8] in AWQ's interleaved order (module docstring)."""
    if codes.dim() != 2 or codes.shape[1] % PER_WORD:
        raise AWQFormatError(f"awq: cannot pack codes {tuple(codes.shape)}: need [R, N] with N a multiple of 8")
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 2**BITS):
        raise AWQFormatError(f"awq: codes outside [0, {2**BITS - 1}] cannot be packed in {BITS} bits")
    order = torch.tensor(AWQ_ORDER, device=c.device)
    nibbles = c.reshape(c.shape[0], -1, PER_WORD)[..., order]  # [R, N/8, nibble j] = column AWQ_ORDER[j]
    shifts = torch.arange(PER_WORD, device=c.device, dtype=torch.int64) * BITS
    return _to_int32((nibbles << shifts).sum(-1)).contiguous()  # disjoint fields: the sum is the bitwise or


def unpack_columns(words: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_columns`: int32 words [R, N / 8] -> int32 codes [R, N]."""
    if words.dtype != torch.int32 or words.dim() != 2:
        raise AWQFormatError(f"awq: packed tensor {tuple(words.shape)} {words.dtype}: expected int32 [R, N / 8]")
    w = words.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(PER_WORD, device=w.device, dtype=torch.int64) * BITS
    nibbles = (w.unsqueeze(-1) >> shifts) & (2**BITS - 1)  # [R, N/8, nibble j]
    reverse = torch.tensor(AWQ_REVERSE_ORDER, device=w.device)
    return nibbles[..., reverse].reshape(w.shape[0], -1).to(torch.int32).contiguous()


def to_checkpoint(layer: GPTQLayer, bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A layer's codes [K, N], zeros [G, N], scales [G, N] (contiguous groups) -> its AWQ checkpoint tensors."""
    if layer.bits != BITS:
        raise AWQFormatError(f"awq: the GEMM layout holds 4-bit codes, got bits={layer.bits}")
    out = {"qweight": pack_columns(layer.codes), "qzeros": pack_columns(layer.zeros),
           "scales": layer.scales.to(torch.float16).contiguous()}
    if bias is not None:
        out["bias"] = bias.detach().to(torch.float16).contiguous()
    return out


def from_checkpoint(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                    group_size: int) -> GPTQLayer:
    """Unpack a layer's AWQ tensors into codes/zeros/scales, checking that their shapes agree."""
    k, n = qweight.shape[0], qweight.shape[1] * PER_WORD
    groups = num_groups(k, group_size)
    if tuple(qzeros.shape) != (groups, n // PER_WORD) or tuple(scales.shape) != (groups, n):
        raise AWQFormatError(
            f"awq: inconsistent shapes qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, scales "
            f"{tuple(scales.shape)} for group_size={group_size}: expected qzeros {(groups, n // PER_WORD)}, "
            f"scales {(groups, n)}")
    return GPTQLayer(codes=unpack_columns(qweight), zeros=unpack_columns(qzeros), scales=scales.to(torch.float16),
                     g_idx=default_g_idx(k, group_size, device=qweight.device), bits=BITS)
