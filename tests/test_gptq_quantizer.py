"""The GPTQ algorithm on single layers: equals a plain float64 column loop, beats round-to-nearest on the layer
reconstruction error, act-order groups, asymmetric zero points, dead columns."""

import math

import pytest
import torch

from methods.gptq.format import default_g_idx
from methods.gptq.quantizer import QuantSpec, gptq, group_params, quantize_codes, rtn

K, N = 192, 48


def correlated_inputs(k: int = K, tokens: int = 1024, seed: int = 0) -> torch.Tensor:
    """Inputs with strongly correlated features and uneven feature scales (what LLM activations look like)."""
    g = torch.Generator().manual_seed(0)  # one distribution; `seed` draws different tokens from it
    mix = torch.randn(k, k, generator=g) / math.sqrt(k)
    scale = torch.logspace(-1, 1, k)[torch.randperm(k, generator=g)]
    g.manual_seed(seed + 1)
    return (torch.randn(tokens, k, generator=g) @ mix + 0.05 * torch.randn(tokens, k, generator=g)) * scale


def hessian(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return 2 * x.t() @ x / x.shape[0]


def reference_gptq(w: torch.Tensor, h: torch.Tensor, spec: QuantSpec):
    """The GPTQ column loop written out plainly in float64: no lazy blocks, every update applied at once.
    Returns (codes [N, K], g_idx [K]) in the original column order."""
    w, h = w.double().clone(), h.double().clone()
    k = w.shape[1]
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    gs = k if spec.group_size == -1 else spec.group_size
    fixed = {}
    if spec.group_size == -1 or spec.static_groups:
        fixed = {j: group_params(w[:, c:c + gs], spec) for j, c in enumerate(range(0, k, gs))}
    if spec.desc_act:
        order = torch.argsort(h.diagonal(), descending=True, stable=True)
    elif spec.act_group_aware:
        order = torch.tensor(reference_gar_order(h.diagonal().tolist(), gs))
    else:
        order = torch.arange(k)
    row_groups = spec.act_group_aware and not spec.desc_act
    w, h = w[:, order], h[order][:, order]
    h += spec.damp_percent * h.diagonal().mean() * torch.eye(k, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes, g_idx, params = torch.zeros_like(w), torch.zeros(k, dtype=torch.int32), {}
    for i in range(k):
        if fixed:
            g = int(order[i]) // gs
            scale, zero = fixed[g]
        else:
            g = int(order[i]) // gs if row_groups else i // gs
            if i % gs == 0:
                params[g] = group_params(w[:, i:i + gs], spec)
            scale, zero = params[g]
        g_idx[order[i]] = g
        codes[:, i] = quantize_codes(w[:, i], scale, zero, spec.maxq)
        err = (w[:, i] - scale * (codes[:, i] - zero)) / u[i, i]
        w[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
    return codes[:, torch.argsort(order)].to(torch.int32), g_idx


def reference_gar_order(diag: list[float], gs: int) -> list[int]:
    """GAR written out: full row groups by decreasing max diag, then a short last group; rows by decreasing diag."""
    groups = [list(range(c, min(c + gs, len(diag)))) for c in range(0, len(diag), gs)]
    full, short = [g for g in groups if len(g) == gs], [g for g in groups if len(g) < gs]
    full.sort(key=lambda g: -max(diag[i] for i in g))
    return [i for g in full + short for i in sorted(g, key=lambda i: -diag[i])]


SPECS = {
    "w4g32": QuantSpec(bits=4, group_size=32),
    "w4g64-actorder-asym": QuantSpec(bits=4, group_size=64, sym=False, desc_act=True),
    "w4g96-block64": QuantSpec(bits=4, group_size=96, block_size=64),  # groups straddling lazy blocks
    "w4g128-actorder-static": QuantSpec(bits=4, group_size=128, desc_act=True, static_groups=True),
    "w8-perchannel-asym-v2": QuantSpec(bits=8, group_size=-1, sym=False, checkpoint_format="gptq_v2"),
    "w4g32-gar": QuantSpec(bits=4, group_size=32, act_group_aware=True),
    "w4g80-gar-asym-short-group": QuantSpec(bits=4, group_size=80, sym=False, act_group_aware=True),
    "w4-perchannel-gar": QuantSpec(bits=4, group_size=-1, act_group_aware=True),
}


@pytest.mark.parametrize("name", SPECS)
def test_lazy_block_quantizer_equals_plain_float64_column_loop(name):
    spec = SPECS[name]
    torch.manual_seed(1)
    w, x = torch.randn(N, K), correlated_inputs()
    x[:, 7] = 0  # a dead input feature
    h = hessian(x)
    codes, g_idx = reference_gptq(w, h, spec)
    ours = gptq(w, h, spec, dtype=torch.float64).layer
    assert torch.equal(ours.g_idx, g_idx)
    assert torch.equal(ours.codes.t(), codes)
    # The default float32 loop: the same codes up to a few float32 rounding ties.
    assert (gptq(w, h, spec).layer.codes.t() == codes).float().mean() > 0.995


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, -1), (8, 64)])
def test_gptq_beats_rtn_on_layer_reconstruction_error(bits, group_size):
    """||X W^T - X W_q^T|| is what GPTQ minimises: lower than RTN's on the calibration inputs and on fresh
    inputs from the same distribution (by ~20% here; measured ratios 0.79-0.83)."""
    spec = QuantSpec(bits=bits, group_size=group_size)
    torch.manual_seed(2)
    w = torch.randn(N, K)
    x_calib, x_test = correlated_inputs(tokens=2048, seed=3), correlated_inputs(tokens=2048, seed=4)
    g, r = gptq(w, hessian(x_calib), spec).layer, rtn(w, spec)

    def err(x, layer):
        return torch.linalg.norm(x @ w.t() - x @ layer.dequantize().t()).item()

    assert err(x_calib, g) < 0.87 * err(x_calib, r)
    assert err(x_test, g) < 0.9 * err(x_test, r)


def test_act_order_groups_follow_the_permutation():
    spec = QuantSpec(bits=4, group_size=32, desc_act=True)
    torch.manual_seed(3)
    w, h = torch.randn(N, K), hessian(correlated_inputs())
    res = gptq(w, h, spec)
    order = torch.argsort(h.diagonal(), descending=True, stable=True)
    assert torch.equal(res.perm, order)
    # g_idx is stored per original row: the i-th row visited belongs to group i // 32.
    assert torch.equal(res.layer.g_idx[order], torch.arange(K, dtype=torch.int32) // 32)
    assert not torch.equal(res.layer.g_idx, default_g_idx(K, 32))
    assert torch.bincount(res.layer.g_idx).tolist() == [32] * (K // 32)
    # static_groups keeps the row groups.
    static = gptq(w, h, QuantSpec(bits=4, group_size=32, desc_act=True, static_groups=True))
    assert torch.equal(static.layer.g_idx, default_g_idx(K, 32))


def test_group_aware_reordering_keeps_row_groups():
    """GAR visits high-energy groups and rows first but stores plain row groups: g_idx is the default one, so the
    checkpoint is a desc_act=false checkpoint. With every group's rows already in decreasing diag(H) order and
    groups in decreasing order of their largest diag, GAR visits rows in their natural order: plain GPTQ."""
    spec = QuantSpec(bits=4, group_size=32, act_group_aware=True)
    torch.manual_seed(7)
    w, h = torch.randn(N, K), hessian(correlated_inputs())
    res = gptq(w, h, spec)
    assert torch.equal(res.layer.g_idx, default_g_idx(K, 32))
    assert sorted(res.perm.tolist()) == list(range(K)) and not torch.equal(res.perm, torch.arange(K))
    diag = h.diagonal()
    assert all(diag[res.perm[i]] >= diag[res.perm[i + 1]] for i in range(K - 1) if (i + 1) % 32)
    ordered = torch.argsort(diag, descending=True, stable=True)
    h_sorted, w_sorted = h[ordered][:, ordered], w[:, ordered]
    natural = gptq(w_sorted, h_sorted, spec, dtype=torch.float64)
    plain = gptq(w_sorted, h_sorted, QuantSpec(bits=4, group_size=32), dtype=torch.float64)
    assert torch.equal(natural.perm, torch.arange(K))
    assert torch.equal(natural.layer.codes, plain.layer.codes)


def test_asymmetric_zero_points_and_the_v1_clamp():
    torch.manual_seed(4)
    w = torch.randn(N, 64)
    w[0] = torch.rand(64) + 0.5  # an all-positive row: its ideal zero point is 0
    for fmt_name, lowest in (("gptq_v2", 0), ("gptq", 1)):
        spec = QuantSpec(bits=4, group_size=32, sym=False, checkpoint_format=fmt_name)
        layer = rtn(w, spec)
        assert layer.zeros[:, 0].tolist() == [lowest, lowest]
        assert int(layer.zeros.min()) >= lowest and len(layer.zeros.unique()) > 3
        assert layer.codes.min() >= 0 and layer.codes.max() <= 15
        # Every group's grid covers its weights to within half a step (plus the v1 clamp's one step).
        err = (layer.dequantize() - w).abs()
        step = layer.scales.float().repeat_interleave(32, dim=0).t()
        assert (err <= step * (0.5 if lowest == 0 else 1.5) + 1e-6).all()
    sym = rtn(w, QuantSpec(bits=4, group_size=32))
    assert sym.zeros.eq(8).all()


def test_rtn_is_round_to_nearest_on_the_fp16_scale_grid():
    torch.manual_seed(5)
    w = torch.randn(8, 64)
    layer = rtn(w, QuantSpec(bits=4, group_size=32))
    scale = (w.reshape(8, 2, 32).abs().amax(-1) * 2 / 15).half().float()  # [8, 2]
    expected = torch.clamp(torch.round(w / scale.repeat_interleave(32, 1)) + 8, 0, 15)
    assert torch.equal(layer.codes.t().float(), expected)
    assert torch.equal(layer.scales.float(), scale.t())


def test_dead_columns_quantize_to_zero_and_partial_last_group():
    torch.manual_seed(6)
    w, x = torch.randn(N, 80), correlated_inputs(80)
    x[:, [0, 79]] = 0
    layer = gptq(w, hessian(x), QuantSpec(bits=4, group_size=32)).layer
    assert layer.scales.shape == (3, N)  # groups of 32, 32 and 16 rows
    assert layer.dequantize()[:, [0, 79]].eq(0).all()
