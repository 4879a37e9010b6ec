"""FP8 quantizers and GEMMs against plain-torch references (Triton runs interpreted on CPU)."""

import pytest
import torch

from kernels import fp8 as k

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def test_known_answer_scales():
    q, s = k.quantize_fp8_per_tensor(torch.tensor([896.0, -448.0, 1.0]))
    assert s.item() == 2.0
    assert q.float().tolist() == [448.0, -224.0, 0.5]
    q, s = k.quantize_fp8_per_token(torch.tensor([[4.48, 0.0], [0.0, -44.8]]))
    assert torch.allclose(s.squeeze(1), torch.tensor([0.01, 0.1]))


def test_zero_tensor_gets_a_finite_scale_and_no_nan():
    q, s = k.quantize_fp8_per_tensor(torch.zeros(4, 4))
    assert torch.isfinite(s).all() and s.item() > 0
    assert torch.equal(q.float(), torch.zeros(4, 4))


def test_saturation_instead_of_nan():
    # A plain cast of an out-of-range value is NaN in some torch builds and saturates in others: we clamp.
    q = k.quantize_fp8_static(torch.tensor([1000.0, -1e6, float("inf"), 3.0]), torch.tensor([1.0]))
    assert q.float().tolist() == [448.0, -448.0, 448.0, 3.0]


@pytest.mark.parametrize("shape,block", [((136, 200), (128, 128)), ((64, 64), (128, 128)), ((300, 130), (64, 32))])
def test_block_quantization_uneven_shapes(shape, block):
    torch.manual_seed(0)
    w = torch.randn(shape)
    q, s = k.quantize_fp8_block(w, block)
    assert s.shape == (-(-shape[0] // block[0]), -(-shape[1] // block[1]))
    deq = k.dequantize_fp8_block(q, s, block)
    # e4m3 has 3 mantissa bits: every element within 2^-4 of its value relative to its block's amax/448 grid
    err = (deq - w).abs()
    bound = s.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[:shape[0], :shape[1]] * 448 * 2**-4
    assert (err <= bound + 1e-6).all()
    # each block's amax maps to exactly 448
    assert q.float().abs().max() == 448.0


@pytest.mark.parametrize("M,K", [(1, 128), (7, 200), (33, 96)])
def test_triton_per_token_quant_matches_reference(M, K):
    torch.manual_seed(M)
    x = (torch.randn(M, K) * 5).to(DEV)
    q, s = k.per_token_quant_fp8_triton(x)
    q_ref, s_ref = k.quantize_fp8_per_token(x)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.float(), q_ref.float())
    qg, sg = k.per_token_group_quant_fp8_triton(x, 64)
    qg_ref, sg_ref = k.quantize_fp8_per_token_group(x, 64)
    assert torch.equal(sg, sg_ref) and torch.equal(qg.float(), qg_ref.float())


@pytest.mark.parametrize("M,N,K,bias", [(1, 64, 128, False), (7, 136, 200, True), (33, 128, 256, False)])
def test_triton_block_gemm_matches_float64(M, N, K, bias):
    torch.manual_seed(N)
    x = torch.randn(M, K, device=DEV)
    w = torch.randn(N, K, device=DEV)
    b = torch.randn(N, device=DEV) if bias else None
    wq, ws = k.quantize_fp8_block(w, (128, 128))
    xq, xs = k.quantize_fp8_per_token_group(x, 128)
    y = k.fp8_block_gemm_triton(xq, xs, wq, ws, (128, 128), bias=b, out_dtype=torch.float32)
    # float64 reference from the same fp8 operands and scales
    ref = (xq.double() * xs.double().repeat_interleave(128, 1)[:, :K]) @ \
        k.dequantize_fp8_block(wq, ws, (128, 128)).double().t()
    if bias:
        ref = ref + b.double()
    # Interpreted: float32 sums of exactly representable products. Hopper's FP8 tensor cores accumulate each
    # 128-deep block with fewer mantissa bits than float32 (DeepSeek-V3 report, sec. 3.3.2): looser bound there.
    tol = 2e-3 if DEV == "cuda" else 1e-5
    err = rel(y, ref)
    print(f"block gemm M={M} N={N} K={K}: rel err {err:.2e}")
    assert err < tol


@pytest.mark.parametrize("opts", [dict(), dict(act_granularity="token"), dict(block_size=(128, 128))])
def test_fp8_linear_torch_path_equals_emulation_and_tracks_float(opts):
    torch.manual_seed(1)
    x, w = torch.randn(5, 256), torch.randn(64, 256) / 16
    if "block_size" in opts:
        wq, ws = k.quantize_fp8_block(w, opts["block_size"])
    else:
        wq, ws = k.quantize_fp8_per_channel(w)
    y = k.fp8_linear(x, wq, ws, backend="torch", **opts)
    assert y.dtype == x.dtype and y.shape == (5, 64)
    assert rel(y, x @ w.t()) < 0.08  # two e4m3 roundings: a few percent


def test_fp8_linear_rejects_bad_input():
    wq, ws = k.quantize_fp8_per_tensor(torch.randn(8, 16))
    with pytest.raises(ValueError, match="do not chain"):
        k.fp8_linear(torch.randn(2, 15), wq, ws)
    with pytest.raises(ValueError, match="expected torch.float8_e4m3fn"):
        k.fp8_linear(torch.randn(2, 16), torch.randn(8, 16), ws)
    with pytest.raises(ValueError, match="needs input_scale"):
        k.fp8_linear(torch.randn(2, 16), wq, ws, activation_scheme="static")
    with pytest.raises(ValueError, match="not blocks"):
        k.fp8_linear(torch.randn(2, 16), wq, ws, block_size=(8, 8), backend="scaled_mm")


@pytest.mark.skipif(DEV != "cuda" or not k.fp8_supported(DEV), reason="torch._scaled_mm needs an FP8 GPU")
@pytest.mark.parametrize("token", [False, True])
def test_scaled_mm_matches_emulation(token):
    torch.manual_seed(2)
    x, w = torch.randn(33, 256, device=DEV, dtype=torch.bfloat16), torch.randn(128, 256, device=DEV) / 16
    wq, ws = k.quantize_fp8_per_channel(w) if token else k.quantize_fp8_per_tensor(w)
    opts = dict(act_granularity="token" if token else "tensor")
    y = k.fp8_linear(x, wq, ws, backend="scaled_mm", **opts)
    ref = k.fp8_linear(x, wq, ws, backend="torch", **opts)
    assert rel(y, ref) < 1e-2
