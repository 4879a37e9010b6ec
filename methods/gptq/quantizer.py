"""The GPTQ algorithm (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") for one linear layer, and round-to-nearest (RTN) with the same grid and groups.

GPTQ quantizes the weight columns (input features) one at a time and spreads each column's rounding error over
the columns not yet quantized, weighted by the inverse Hessian of the layer's reconstruction loss
||X W^T - X W_q^T||^2 (H = 2 X^T X over calibration tokens). Its structure follows AutoGPTQ's `fasterquant`:
dead columns, damping, optional act-order, static groups, lazy block updates, the upper Cholesky factor of H^-1.
Group-aware reordering (GAR; Gafni et al. 2025, GPTQModel's `act_group_aware`) is act-order that keeps groups
as contiguous input rows: the checkpoint needs no g_idx permutation (desc_act=false), so kernels run their fast
path, while the high-energy columns are still quantized first and absorb no one else's error.

Where we differ from AutoGPTQ, on purpose:
  * scales are rounded to fp16 *before* the codes are chosen, so the error feedback sees exactly the weights the
    checkpoint will hold (AutoGPTQ rounds afterwards and re-derives the codes when packing);
  * a group's scale/zero come from the group's current (error-updated) weights even when the group starts inside
    a lazy block (AutoGPTQ reads the block's stale copy there, for group_size < block_size); this makes the lazy
    loop equal to the plain column-by-column loop;
  * symmetric grids always span [-max|w|, +max|w|] (AutoGPTQ keeps min 0 for an all-positive group, so such a
    group's codes only reach half the range);
  * checkpoint_format=gptq (v1) stores zero - 1, so asymmetric zero points are kept >= 1 (the clamp every v1
    writer applies, here applied before the codes are chosen).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from methods.gptq.format import GPTQLayer, default_g_idx, num_groups, zero_range

FP16_TINY = 2.0**-14  # smallest normal fp16: scales stay exact fp16 numbers, never 0
FP16_MAX = 65504.0


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """How to quantize one layer (the GPTQConfig options the algorithm reads)."""

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    checkpoint_format: str = "gptq"
    desc_act: bool = False
    static_groups: bool = False
    damp_percent: float = 0.01
    block_size: int = 128
    act_group_aware: bool = False  # GAR; desc_act takes precedence

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1


def group_params(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero point per row of `w` [N, cols]: (scale [N] rounded to fp16 values, zero [N])."""
    xmin = w.min(dim=1).values.clamp(max=0)
    xmax = w.max(dim=1).values.clamp(min=0)
    if spec.sym:
        xmax = torch.maximum(-xmin, xmax)
        xmin = -xmax
    empty = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(empty, -1.0, xmin), torch.where(empty, 1.0, xmax)
    scale = ((xmax - xmin) / spec.maxq).clamp(FP16_TINY, FP16_MAX).half().to(w.dtype)
    if spec.sym:
        zero = torch.full_like(scale, 2 ** (spec.bits - 1))
    else:
        lo, hi = zero_range(spec.bits, spec.checkpoint_format)
        zero = torch.round(-xmin / scale).clamp(lo, hi)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Codes (as floats) of `w` on the grid scale * (code - zero); scale/zero broadcast against `w`."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def _layer(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor,
           spec: QuantSpec) -> GPTQLayer:
    """codes [N, K] float, scales/zeros [G, N] -> the checkpoint-facing GPTQLayer."""
    return GPTQLayer(codes=codes.t().to(torch.int32).contiguous(), zeros=zeros.to(torch.int32).contiguous(),
                     scales=scales.to(torch.float16).contiguous(), g_idx=g_idx.to(torch.int32), bits=spec.bits)


def rtn(weight: torch.Tensor, spec: QuantSpec) -> GPTQLayer:
    """Round-to-nearest on the same grid and groups as GPTQ (no calibration, no error feedback)."""
    w = weight.detach().float()
    n, k = w.shape
    gs = k if spec.group_size == -1 else spec.group_size
    g_idx = default_g_idx(k, spec.group_size, device=w.device)
    scales, zeros = zip(*(group_params(w[:, c:c + gs], spec) for c in range(0, k, gs)))
    scales, zeros = torch.stack(scales), torch.stack(zeros)
    codes = quantize_codes(w, scales[g_idx.long()].t(), zeros[g_idx.long()].t(), spec.maxq)
    return _layer(codes, scales, zeros, g_idx, spec)


class Hessian:
    """Running H = 2/n * sum x x^T over the n calibration tokens a layer sees: per batch X^T X in float32
    (the matmul), summed over batches in float64."""

    def __init__(self, features: int, device: torch.device | str):
        self.sum = torch.zeros(features, features, dtype=torch.float64, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.sum += (x.t() @ x).double()
        self.tokens += x.shape[0]

    def value(self) -> torch.Tensor:
        if self.tokens == 0:
            raise RuntimeError("gptq: a layer saw no calibration tokens; is it used in the forward pass?")
        return self.sum * (2.0 / self.tokens)


def inverse_hessian_factor(h: torch.Tensor, damp_percent: float) -> torch.Tensor:
    """Upper Cholesky factor U of (H + damp I)^-1 (so H^-1 = U^T U), in float64.

    damp = damp_percent * mean(diag H). If H + damp I is not positive definite, damping grows 10x at a time
    (with a warning) up to 100% of the mean diagonal."""
    h = h.to(torch.float64)
    mean_diag = h.diagonal().mean()
    pct = damp_percent
    while True:
        damped = h + pct * mean_diag * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        chol, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if int(info) == 0:
                return upper
        if pct >= 1.0:
            raise RuntimeError(f"gptq: Hessian is not positive definite even with damp_percent={pct}; "
                               f"the layer's calibration inputs are degenerate (too few or non-finite samples?)")
        warnings.warn(f"gptq: Hessian not positive definite at damp_percent={pct}; retrying with {pct * 10}")
        pct = min(pct * 10, 1.0)


def gar_order(diag: torch.Tensor, group_size: int) -> torch.Tensor:
    """Group-aware visiting order: groups of contiguous rows by decreasing max diag(H), the rows inside a group by
    decreasing diag(H). A short last group is visited last, so every other group starts at a multiple of
    group_size (the lazy blocks and the group-start test of the column loop rely on that)."""
    k = diag.numel()
    rows_group = default_g_idx(k, group_size, device=diag.device).long()
    groups = int(rows_group[-1]) + 1
    key = torch.full((groups,), float("-inf"), dtype=diag.dtype, device=diag.device)
    key = key.scatter_reduce(0, rows_group, diag, reduce="amax")
    if group_size != -1 and k % group_size:
        key[-1] = float("-inf")
    group_rank = torch.argsort(torch.argsort(key, descending=True, stable=True))
    within = torch.argsort(diag, descending=True, stable=True)
    return within[torch.argsort(group_rank[rows_group[within]], stable=True)]


def _effective_block(block_size: int, group_size: int) -> int:
    """A lazy block size at which every group starts at a block start or lies inside one block."""
    if group_size <= 0 or block_size % group_size == 0 or group_size % block_size == 0:
        return block_size
    return group_size


@dataclasses.dataclass
class GPTQResult:
    layer: GPTQLayer
    perm: torch.Tensor | None  # act-order: the column order in which columns were quantized
    loss: float  # sum over columns of (w - q)^2 / Hinv_ii^2 / 2: GPTQ's estimate of the added error


def gptq(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec,
         dtype: torch.dtype = torch.float32) -> GPTQResult:
    """Quantize `weight` [N, K] given the layer's Hessian [K, K]; the column loop runs in `dtype`."""
    w = weight.detach().to(dtype).clone()
    h = hessian.detach().to(torch.float64).clone()
    n, k = w.shape
    gs = k if spec.group_size == -1 else spec.group_size
    groups = num_groups(k, spec.group_size)

    dead = h.diagonal() == 0
    h[dead, dead] = 1.0  # a column that never sees input: any value is exact; quantize it as 0
    w[:, dead] = 0

    # Columns are visited in `perm` order (act-order: largest diag(H), i.e. largest input energy, first; GAR:
    # the same inside row groups, groups by their largest diag(H)).
    perm = None
    if spec.desc_act:
        perm = torch.argsort(h.diagonal(), descending=True, stable=True)
    elif spec.act_group_aware:
        perm = gar_order(h.diagonal(), spec.group_size)
    # Group of the column at each visiting position. Without act-order, groups are contiguous input rows; with
    # act-order they are contiguous runs of the visiting order (AutoGPTQ), unless static_groups or GAR keep the
    # row groups. Per-channel and static groups get their scale/zero from the unquantized weights before the
    # loop; the others from the group's current (error-updated) weights when its first column is visited.
    rows_group = default_g_idx(k, spec.group_size, device=w.device).long()
    if perm is None:
        visit_group = rows_group
    elif spec.static_groups or not spec.desc_act:
        visit_group = rows_group[perm]
    else:
        visit_group = torch.arange(k, device=w.device) // gs
    precomputed = spec.group_size == -1 or spec.static_groups
    scales = torch.zeros(groups, n, dtype=dtype, device=w.device)
    zeros = torch.zeros(groups, n, dtype=dtype, device=w.device)
    if precomputed:
        for j, c in enumerate(range(0, k, gs)):
            scales[j], zeros[j] = group_params(w[:, c:c + gs], spec)

    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    hinv = inverse_hessian_factor(h, spec.damp_percent).to(dtype)

    codes = torch.zeros_like(w)
    loss = torch.zeros((), dtype=torch.float64, device=w.device)
    block = _effective_block(spec.block_size, spec.group_size)
    vg = visit_group.tolist()
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = vg[col]
            if not precomputed and col % gs == 0:
                # The group's columns as they stand now. A group starting inside the block lies inside it and
                # w1 holds its updates; at a block start w is up to date (_effective_block ensures one case).
                scales[g], zeros[g] = group_params(w1[:, i:i + gs] if i else w[:, col:col + gs], spec)
            x = w1[:, i]
            d = hinv1[i, i]
            c = quantize_codes(x, scales[g], zeros[g], spec.maxq)
            q = scales[g] * (c - zeros[g])
            codes[:, col] = c
            e = (x - q) / d
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
        loss += (err1.double() ** 2).sum() / 2

    g_idx = visit_group.to(torch.int32)
    if perm is not None:
        inv = torch.argsort(perm)
        codes, g_idx = codes[:, inv], g_idx[inv]
    return GPTQResult(layer=_layer(codes, scales, zeros, g_idx, spec), perm=perm, loss=float(loss))
