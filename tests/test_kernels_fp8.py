"""FP8 quantizers and GEMMs against plain-torch references (Triton runs interpreted on CPU)."""

import json
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import pytest  # noqa: E402

from kernels import fp8 as k  # noqa: E402
from kernels import splitk  # noqa: E402
from kernels import tuning  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
FP8_GPU = DEV == "cuda" and k.fp8_supported(DEV)
needs_triton = pytest.mark.skipif(k.triton is None or not (FP8_GPU or os.environ.get("TRITON_INTERPRET") == "1"),
                                  reason="Triton FP8 needs an FP8 GPU or TRITON_INTERPRET=1")


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def test_known_answer_scales():
    q, s = k.quantize_fp8_per_tensor(torch.tensor([896.0, -448.0, 1.0]))
    assert s.item() == 2.0
    assert q.float().tolist() == [448.0, -224.0, 0.5]
    q, s = k.quantize_fp8_per_token(torch.tensor([[4.48, 0.0], [0.0, -44.8]]))
    assert s.shape == (2, 1) and torch.allclose(s.squeeze(1), torch.tensor([0.01, 0.1]))
    _, s = k.quantize_fp8_per_channel(torch.tensor([[896.0, 1.0], [-1.0, 0.5]]))
    assert s.squeeze(1).tolist() == [2.0, pytest.approx(1.0 / 448)]
    w = torch.zeros(130, 260)
    w[0, 0], w[129, 259] = 896.0, -4.48
    _, s = k.quantize_fp8_block(w, (128, 128))
    assert s.shape == (2, 3) and s[0, 0].item() == 2.0 and s[1, 2].item() == pytest.approx(0.01)


def test_zero_tensor_gets_a_finite_scale_and_no_nan():
    z = torch.zeros(4, 256)
    for q, s in (k.quantize_fp8_per_tensor(z), k.quantize_fp8_per_token(z), k.quantize_fp8_block(z),
                 k.quantize_fp8_per_token_group(z)):
        assert torch.isfinite(s).all() and (s > 0).all() and s.max().item() == pytest.approx(k.MIN_AMAX / 448)
        assert torch.equal(q.float(), torch.zeros_like(z))


def test_saturation_instead_of_nan():
    # A plain cast of a value >= 480 is NaN in some torch builds and saturates in others: we clamp first.
    q = k.quantize_fp8_static(torch.tensor([1000.0, -1e6, float("inf"), 3.0, 895.0]), torch.tensor([2.0]))
    assert q.float().tolist() == [448.0, -448.0, 448.0, 1.5, 448.0]


@pytest.mark.parametrize("shape,block", [((136, 200), (128, 128)), ((64, 64), (128, 128)), ((300, 130), (64, 32))])
def test_block_quantization_uneven_shapes(shape, block):
    torch.manual_seed(0)
    w = torch.randn(shape)
    q, s = k.quantize_fp8_block(w, block)
    assert s.shape == (-(-shape[0] // block[0]), -(-shape[1] // block[1]))
    deq = k.dequantize_fp8_block(q, s, block)
    # e4m3 has 3 mantissa bits: round-to-nearest is within 2^-4 relative of each element, and below the
    # normal range (|q| < 2^-6) within half the subnormal step 2^-9 (in units of the block's scale).
    full_s = s.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[:shape[0], :shape[1]]
    assert ((deq - w).abs() <= torch.maximum(w.abs() * 2**-4, full_s * 2**-10) * (1 + 1e-6)).all()
    # each block's amax maps to exactly ±448
    assert (q.float().abs().amax() == 448.0).item()


@needs_triton
@pytest.mark.parametrize("M,K", [(1, 128), (7, 200), (33, 96)])
def test_triton_activation_quant_is_bit_exact(M, K):
    torch.manual_seed(M)
    x = (torch.randn(M, K) * 5).to(DEV)
    x[0, 0] = 126.4  # rounds across a power of two (to 128): the case the CPU interpreter's own cast gets wrong
    x[1:2] = 0  # an all-zero token: tiny finite scale, zeros out
    for (q, s), (q_ref, s_ref) in (
            (k.per_token_quant_fp8_triton(x), k.quantize_fp8_per_token(x)),
            (k.per_token_group_quant_fp8_triton(x, 64), k.quantize_fp8_per_token_group(x, 64)),
            (k.per_tensor_quant_fp8_triton(x), k.quantize_fp8_per_tensor(x)),
            (k.per_tensor_quant_fp8_triton(x, torch.tensor([0.02], device=DEV)),
             (k.quantize_fp8_static(x, torch.tensor([0.02], device=DEV)), torch.tensor([0.02], device=DEV)))):
        assert q.dtype == k.FP8_DTYPE and s.shape == s_ref.shape
        assert torch.equal(s, s_ref)
        assert torch.equal(q.float(), q_ref.float())


@needs_triton
def test_one_program_and_two_pass_per_tensor_quant_agree(monkeypatch):
    # x above and below ONE_PROGRAM_QUANT_MAX takes the one-program kernel or amax + cast: same scale, same codes
    torch.manual_seed(0)
    x = (torch.randn(5, 1000) * 3).to(DEV)
    x[2, 7] = -126.4
    one = k.per_tensor_quant_fp8_triton(x)
    monkeypatch.setattr(k, "ONE_PROGRAM_QUANT_MAX", 0)
    two = k.per_tensor_quant_fp8_triton(x)
    ref = k.quantize_fp8_per_tensor(x)
    for q, s in (one, two):
        assert torch.equal(s, ref[1]) and torch.equal(q.float(), ref[0].float())


@needs_triton
@pytest.mark.skipif(not FP8_GPU or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs an sm_90+ GPU")
def test_gemv_under_programmatic_launch_reads_what_the_kernel_before_wrote(same_under_pdl):
    # two chained FP8 gemvs (the second quantizes and reads the first's output) under PDL, eager and replayed
    # from a CUDA graph with the input rewritten between replays: the plain launches' results (split-K adds in
    # arrival order: within rounding)
    gen = torch.Generator().manual_seed(3)
    w1, w2 = (torch.randn(n, kk, generator=gen).to(DEV) / 16 for n, kk in ((1024, 2048), (512, 1024)))
    (q1, s1), (q2, s2) = k.quantize_fp8_per_channel(w1), k.quantize_fp8_per_channel(w2)
    cfg = dict(block_n=32, block_k=128, split_k=4, num_warps=4, num_stages=3)

    def chain(x):
        return k.fp8_gemv_triton(k.fp8_gemv_triton(x, q1, s1, config=cfg), q2, s2, config=cfg)

    xs = [torch.randn(1, 2048, generator=gen).to(torch.bfloat16).to(DEV) for _ in range(2)]
    same_under_pdl(chain, xs, lambda got, want: torch.allclose(got, want, rtol=2e-2, atol=2e-2))


def test_gemv_quantizes_activations_like_the_quant_kernels():
    # y = q(x) @ I * x_scale: with an identity weight the GEMV's in-kernel rounding shows directly; it must equal
    # torch's e4m3 cast (ties to even, subnormals below 2^-6), dynamic per tensor and per token
    torch.manual_seed(1)
    K = 256
    x = (torch.randn(3, K) * torch.logspace(-5, 2, K)).clamp(-400, 400)  # normal and subnormal e4m3 codes
    x[0, :8] = torch.tensor([126.4, -0.3, 1e-9, 0.0, 3.0, -448.0 / 64, 2 ** -7 * 448 / 126.4, 5.0])
    # amax 448 (scale 1, per tensor and for this token): exact ties, normal and subnormal, go to the even code
    x[2, :8] = torch.tensor([448.0, 1.0625, 1.1875, -1.0625, 3 * 2 ** -10, 5 * 2 ** -10, -3 * 2 ** -10, 0.0146])
    x = x.to(DEV)
    eye = torch.eye(K, device=DEV).to(k.FP8_DTYPE)
    one = torch.ones(1, device=DEV)
    for gran, (x_q, x_s) in (("tensor", k.quantize_fp8_per_tensor(x)), ("token", k.quantize_fp8_per_token(x))):
        y = k.fp8_gemv_triton(x, eye, one, act_granularity=gran, out_dtype=torch.float32)
        assert torch.equal(y, x_q.float() * x_s.reshape(-1, 1)), gran  # acc = q(x) exactly, times its scale


@needs_triton
@pytest.mark.parametrize("M,scheme,gran,per_channel,bias,config", [
    (1, "dynamic", "tensor", False, False, None), (2, "dynamic", "token", True, True, None),
    (3, "static", "tensor", True, False, None), (4, "dynamic", "tensor", True, True, None),
    # split over K (300 = slices of 128, 128, 44), the reduction in the same launch, bias added once
    (1, "dynamic", "tensor", True, True, dict(block_n=16, block_k=32, split_k=3)),
    (4, "dynamic", "token", False, True, dict(block_n=64, block_k=64, split_k=2)),
    (2, "static", "tensor", False, False, dict(block_n=16, block_k=16, split_k=8))])
def test_gemv_matches_the_reference_w8a8(M, scheme, gran, per_channel, bias, config):
    torch.manual_seed(M)
    N, K = 72, 300  # not multiples of the tiles
    x = torch.randn(M, K, device=DEV)
    w = torch.randn(N, K, device=DEV) * torch.rand(N, 1, device=DEV)
    w_q, w_s = k.quantize_fp8_per_channel(w) if per_channel else k.quantize_fp8_per_tensor(w)
    b = torch.randn(N, device=DEV) if bias else None
    static = torch.tensor([0.01], device=DEV)
    x_q, x_s = ((k.quantize_fp8_static(x, static), static) if scheme == "static" else
                k.quantize_fp8_per_token(x) if gran == "token" else k.quantize_fp8_per_tensor(x))
    ref = k.fp8_linear_ref(x_q, x_s, w_q, w_s, b, torch.float32)
    opts = dict(activation_scheme=scheme, act_granularity=gran, input_scale=static if scheme == "static" else None,
                bias=b, out_dtype=torch.float32)
    if config is None:
        got = k.fp8_linear(x, w_q, w_s, backend="gemv", **opts)
    else:
        got = k.fp8_gemv_triton(x, w_q, w_s, config=config, **opts)
        again = k.fp8_gemv_triton(x, w_q, w_s, config=config, **opts)  # the workspace was left clean
        torch.testing.assert_close(again, got, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
        part, counters = splitk._WORKSPACES[(x.device.type, x.device.index)]
        assert not part.any() and not counters.any()
    assert got.shape == (M, N)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    with pytest.raises(ValueError, match="at most 4"):
        k.fp8_gemv_triton(torch.randn(5, K, device=DEV), w_q, w_s)
    with pytest.raises(ValueError, match="activation_scheme='dynamc'"):  # the scheme checks fp8_linear makes
        k.fp8_gemv_triton(x, w_q, w_s, activation_scheme="dynamc")


def _tol():
    # Interpreted: float32 sums of exactly representable fp8 products, so float32 rounding only (~1e-7).
    # Hopper's FP8 tensor cores accumulate with fewer mantissa bits than float32 (DeepSeek-V3 report,
    # sec. 3.3.2; measured ~1e-4 here on an H100): 2e-3 there, far below fp8's own ~3e-2 quantization error.
    return 2e-3 if DEV == "cuda" else 1e-5


@needs_triton
@pytest.mark.parametrize("M,N,K,bias,bn", [(1, 64, 128, False, 128), (7, 136, 200, True, 128),
                                           (33, 128, 256, False, 128), (7, 136, 200, False, 64)])
def test_triton_block_gemm_matches_float64(M, N, K, bias, bn):
    torch.manual_seed(N)
    x = torch.randn(M, K, device=DEV)
    w = torch.randn(N, K, device=DEV)
    b = torch.randn(N, device=DEV) if bias else None
    wq, ws = k.quantize_fp8_block(w, (bn, 128))
    xq, xs = k.quantize_fp8_per_token_group(x, 128)
    ref = (xq.double() * xs.double().repeat_interleave(128, 1)[:, :K]) @ \
        k.dequantize_fp8_block(wq, ws, (bn, 128)).double().t()
    if bias:
        ref = ref + b.double()
    # default tiles; tiles narrower than a scale block; tiles spanning two scale blocks of N
    for bm, tn in ((None, None), (16, 32), (16, 128)):
        y = k.fp8_block_gemm_triton(xq, xs, wq, ws, (bn, 128), bias=b, out_dtype=torch.float32, block_m=bm,
                                    block_n=tn)
        err = rel(y, ref)
        print(f"block gemm M={M} N={N} K={K} block=({bn},128) tiles={bm},{tn}: rel err {err:.2e}")
        assert err < _tol()


@needs_triton
@pytest.mark.parametrize("M,N,K", [(1, 64, 128), (7, 136, 200), (33, 64, 200)])
@pytest.mark.parametrize("x_token,w_channel", [(False, False), (True, True), (False, True)])
def test_triton_scaled_gemm_matches_float64(M, N, K, x_token, w_channel):
    torch.manual_seed(M + N)
    x = torch.randn(M, K, device=DEV)
    w = torch.randn(N, K, device=DEV)
    b = torch.randn(N, device=DEV)
    xq, xs = (k.quantize_fp8_per_token if x_token else k.quantize_fp8_per_tensor)(x)
    wq, ws = (k.quantize_fp8_per_channel if w_channel else k.quantize_fp8_per_tensor)(w)
    ref = (xq.double() * xs.double().reshape(-1, 1)) @ (wq.double() * ws.double().reshape(-1, 1)).t() + b.double()
    y = k.fp8_scaled_gemm_triton(xq, xs, wq, ws, bias=b, out_dtype=torch.float32)
    assert rel(y, ref) < _tol()


SCHEMES = [dict(), dict(act_granularity="token"), dict(block_size=(128, 128)),
           dict(activation_scheme="static", input_scale=torch.tensor([0.01]))]


def _weights(opts, w):
    if "block_size" in opts:
        return k.quantize_fp8_block(w, opts["block_size"])
    return k.quantize_fp8_per_channel(w)


@pytest.mark.parametrize("opts", SCHEMES)
def test_fp8_linear_cpu_dispatch_equals_emulation_and_tracks_float(opts):
    torch.manual_seed(1)
    x, w, b = torch.randn(5, 200), torch.randn(136, 200) / 16, torch.randn(136)
    wq, ws = _weights(opts, w)
    y = k.fp8_linear(x, wq, ws, bias=b, **opts)  # auto on CPU: quantize in torch, emulate
    if "block_size" in opts:
        xq, xs = k.quantize_fp8_per_token_group(x, 128)
    elif "input_scale" in opts:
        xq, xs = k.quantize_fp8_static(x, opts["input_scale"]), opts["input_scale"]
    else:
        xq, xs = (k.quantize_fp8_per_token if opts else k.quantize_fp8_per_tensor)(x)
    assert torch.equal(y, k.fp8_linear_ref(xq, xs, wq, ws, b, x.dtype, opts.get("block_size")))
    assert y.dtype == x.dtype and y.shape == (5, 136)
    assert rel(y, x @ w.t() + b) < 0.08  # two e4m3 roundings: a few percent


@needs_triton
@pytest.mark.parametrize("opts", SCHEMES)
def test_fp8_linear_triton_backend_matches_torch_backend(opts):
    torch.manual_seed(3)
    x, w = torch.randn(7, 200, device=DEV), torch.randn(136, 200, device=DEV) / 16
    opts = {key: v.to(DEV) if torch.is_tensor(v) else v for key, v in opts.items()}
    wq, ws = _weights(opts, w)
    y = k.fp8_linear(x, wq, ws, backend="triton", **opts)
    assert rel(y, k.fp8_linear(x, wq, ws, backend="torch", **opts)) < _tol()


def test_fp8_linear_rejects_bad_input():
    wq, ws = k.quantize_fp8_per_tensor(torch.randn(8, 16))
    x = torch.randn(2, 16)
    with pytest.raises(ValueError, match="do not chain"):
        k.fp8_linear(torch.randn(2, 15), wq, ws)
    with pytest.raises(ValueError, match="do not chain"):
        k.fp8_linear(torch.randn(2, 3, 16), wq, ws)
    with pytest.raises(ValueError, match="expected torch.float8_e4m3fn"):
        k.fp8_linear(x, torch.randn(8, 16), ws)
    with pytest.raises(ValueError, match="needs input_scale"):
        k.fp8_linear(x, wq, ws, activation_scheme="static")
    with pytest.raises(ValueError, match="use activation_scheme='dynamic'"):
        k.fp8_linear(x, wq, torch.ones(1, 1), activation_scheme="static", input_scale=torch.ones(1),
                     block_size=(8, 16))
    with pytest.raises(ValueError, match="not blocks"):
        k.fp8_linear(x, wq, torch.ones(1, 1), block_size=(8, 16), backend="scaled_mm")
    with pytest.raises(ValueError, match="expected 1 .per tensor. or N"):
        k.fp8_linear(x, wq, torch.ones(3))
    with pytest.raises(ValueError, match=r"expected \(1, 1\)"):
        k.fp8_linear(x, wq, torch.ones(2, 2), block_size=(128, 128))
    with pytest.raises(ValueError, match="backend='cutlass'"):
        k.fp8_linear(x, wq, ws, backend="cutlass")
    with pytest.raises(ValueError, match="act_granularity='channel'"):
        k.fp8_linear(x, wq, ws, act_granularity="channel")
    with pytest.raises(ValueError, match="powers of two"):
        k.fp8_block_gemm_triton(*k.quantize_fp8_per_token_group(x, 16), *k.quantize_fp8_block(wq.float(), (8, 16)),
                                block_size=(8, 16))
    if not FP8_GPU:
        with pytest.raises(ValueError, match="_scaled_mm needs a CUDA GPU"):
            k.fp8_linear(x, wq, ws, backend="scaled_mm")


@pytest.mark.skipif(not FP8_GPU, reason="torch._scaled_mm needs an FP8 GPU")
@pytest.mark.parametrize("x_token,w_channel,static,fast", [(False, False, False, False), (True, True, False, False),
                                                           (False, True, False, False), (False, True, True, False),
                                                           (False, False, False, True), (True, True, False, True)])
def test_scaled_mm_matches_emulation(x_token, w_channel, static, fast):
    # fast: use_fast_accum (no fp32 promotion of the tensor-core accumulator along K), method=fp8's default
    torch.manual_seed(2)
    x, w = torch.randn(33, 2048, device=DEV, dtype=torch.bfloat16), torch.randn(128, 2048, device=DEV) / 16
    wq, ws = k.quantize_fp8_per_channel(w) if w_channel else k.quantize_fp8_per_tensor(w)
    opts = dict(act_granularity="token" if x_token else "tensor", bias=torch.randn(128, device=DEV),
                fast_accum=fast)
    if static:
        opts.update(activation_scheme="static", input_scale=torch.tensor([0.01], device=DEV))
    y = k.fp8_linear(x, wq, ws, backend="scaled_mm", **opts)
    assert y.dtype == torch.bfloat16
    assert rel(y, k.fp8_linear(x, wq, ws, backend="torch", **opts)) < 1e-2


@needs_triton
@pytest.mark.parametrize("M,N,K", [(70, 200, 384), (130, 136, 200), (1, 72, 130)])
@pytest.mark.parametrize("tiles", [dict(BLOCK_M=64, BLOCK_N=128, GROUP_M=8, num_warps=4, num_stages=4),
                                   dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=32, num_warps=8, num_stages=3),
                                   dict(BLOCK_M=32, BLOCK_N=64, GROUP_M=8, num_warps=4, num_stages=4),
                                   dict(BLOCK_M=64, BLOCK_N=256, GROUP_M=8, num_warps=8, num_stages=3)])
def test_block_gemm_tuned_tiles_match_reference_at_uneven_edges(M, N, K, tiles):
    # M, N, K not multiples of the tiles or of the 128x128 scale block (edge rows/columns wrap, the last K block
    # is masked); BLOCK_N 64 / 128 take the scalar weight-scale path, 256 the per-column one; several M tiles
    # exercise the GROUP_M swizzle.
    torch.manual_seed(M + N)
    x, w = torch.randn(M, K, device=DEV), torch.randn(N, K, device=DEV)
    b = torch.randn(N, device=DEV)
    wq, ws = k.quantize_fp8_block(w, (128, 128))
    xq, xs = k.quantize_fp8_per_token_group(x, 128)
    ref = k.fp8_linear_ref(xq.double(), xs.double(), wq.double(), ws.double(), b.double(), torch.float64, (128, 128))
    y = k.fp8_block_gemm_triton(xq, xs, wq, ws, (128, 128), bias=b, out_dtype=torch.float32, config=tiles)
    assert rel(y, ref) < _tol()


@needs_triton
@pytest.mark.parametrize("cfg", [dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
                                 dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, GROUP_M=32, num_warps=8,
                                      num_stages=3)])
def test_scaled_gemm_tuned_block_k(cfg):
    torch.manual_seed(5)
    x, w = torch.randn(33, 200, device=DEV), torch.randn(136, 200, device=DEV)
    xq, xs = k.quantize_fp8_per_token(x)
    wq, ws = k.quantize_fp8_per_channel(w)
    ref = (xq.double() * xs.double()) @ (wq.double() * ws.double()).t()
    assert rel(k.fp8_scaled_gemm_triton(xq, xs, wq, ws, out_dtype=torch.float32, config=cfg), ref) < _tol()


def _table(tmp_path, monkeypatch, entries, gpu="Test GPU 80GB"):
    path = tmp_path / "fp8.json"
    path.write_text(json.dumps({gpu: entries}))
    monkeypatch.setenv(k.TUNING_ENV, str(path))
    monkeypatch.setattr(k, "_gpu_name", lambda index: gpu)
    return path


def test_tuned_table_lookup_picks_the_entry_and_drops_measurements(tmp_path, monkeypatch):
    entry = dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=32, num_warps=8, num_stages=4, median_ms=1.5, default_ms=2.0,
                 tflops=700.0)
    _table(tmp_path, monkeypatch, {k.tuning_key(4096, 57344, 8192, (128, 128)): entry,
                                   k.tuning_key(1024, 4096, 4096, None): dict(BLOCK_M=64, BLOCK_K=64, median_ms=1)})
    cfg = k._gemm_config(3000, True, 57344, 8192, "cuda:0", (128, 128))  # M bucket 4096
    assert cfg == dict(BLOCK_M=128, BLOCK_N=128, GROUP_M=32, num_warps=8, num_stages=4)
    # every key reaches the kernel as a parameter or a launch option, the measurements do not
    assert set(cfg) <= set(k._fp8_gemm_kernel.arg_names) | {"num_warps", "num_stages"}
    # a partial entry keeps the heuristic's other keys; BLOCK_K is a per-row-GEMM tile option
    rows = k._gemm_config(1000, False, 4096, 4096, "cuda:0")
    assert rows == k.default_gemm_config(1000, False) | dict(BLOCK_M=64, BLOCK_K=64)
    # other shapes, M buckets, kinds and GPUs: the heuristic default
    assert k._gemm_config(100, True, 57344, 8192, "cuda:0", (128, 128)) == k.default_gemm_config(100, True)
    assert k._gemm_config(4096, False, 57344, 8192, "cuda:0") == k.default_gemm_config(4096, False)
    assert k._gemm_config(4096, True, 57344, 8192, "cpu", (128, 128)) == k.default_gemm_config(4096, True)
    monkeypatch.setattr(k, "_gpu_name", lambda index: "Other GPU")
    assert k._gemm_config(4096, True, 57344, 8192, "cuda:0", (128, 128)) == k.default_gemm_config(4096, True)


@pytest.mark.parametrize("content", [None, "", "{}"])
def test_missing_or_empty_tuned_table_falls_back_to_the_heuristic(tmp_path, monkeypatch, content):
    path = tmp_path / "none.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(k.TUNING_ENV, str(path))
    monkeypatch.setattr(k, "_gpu_name", lambda index: "Test GPU 80GB")
    for M in (1, 16, 100, 4096):
        for bs in (True, False):
            assert k._gemm_config(M, bs, 57344, 8192, "cuda:0", (128, 128)) == k.default_gemm_config(M, bs)


@needs_triton
def test_a_tuned_kernel_choice_rides_with_the_tiles_but_never_reaches_the_triton_kernel(monkeypatch):
    # block-scaled entries carry `kernel` (fp8_linear's choice of GEMM) beside the tiles; the compiled launcher
    # rejects unknown keywords, the interpreter does not, so the launch's keywords are recorded
    monkeypatch.setattr(k, "tuned_config", lambda *a: {"BLOCK_M": 16, "BLOCK_N": 32, "kernel": "gluon"})
    real, seen = k._fp8_gemm_kernel, {}

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.update(kwargs)
                return real[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(k, "_fp8_gemm_kernel", Spy())
    x, w = torch.randn(5, 256, device=DEV), torch.randn(64, 256, device=DEV)
    xq, xs = k.quantize_fp8_per_token_group(x, 128)
    wq, ws = k.quantize_fp8_block(w, (128, 128))
    y = k.fp8_block_gemm_triton(xq, xs, wq, ws, (128, 128), out_dtype=torch.float32)
    assert seen["BLOCK_M"] == 16 and "kernel" not in seen
    assert rel(y, k.fp8_linear_ref(xq, xs, wq, ws, None, torch.float32, (128, 128))) < _tol()


def test_committed_table_entries_are_valid_configs():
    # GEMM entries carry the GEMM tiles, GEMV entries (`_gemv_M`) the GEMV's config and _scaled_mm's time beside
    # it (what fp8_linear's auto compares), each with their measurements
    table = tuning.load_table.__wrapped__(k.TUNED_FILE)  # may be absent: {}
    for gpu, entries in table.items():
        for key, cfg in entries.items():
            if "_gemv_M" in key:
                measured = {"median_ms", "default_ms", "gbps", "scaled_mm_ms", "scaled_mm_fast_accum"}
                assert set(cfg) - measured == set(k.GEMV_CONFIG_KEYS), key
                assert cfg["median_ms"] > 0 and (cfg.get("scaled_mm_ms") or 1) > 0
            else:
                measured = {"median_ms", "default_ms", "tflops", "triton_ms", "gluon_ms"}
                assert set(cfg) - measured <= set(k.CONFIG_KEYS), (gpu, key)
                assert cfg.get("kernel", "triton") in ("triton", "gluon"), (gpu, key)
                if cfg.get("kernel") == "gluon":  # the choice rests on both kernels' times
                    assert "_b128x128_" in key and cfg["gluon_ms"] < cfg["triton_ms"], (gpu, key)


@needs_triton
def test_tuned_entry_drives_the_interpreted_launch(tmp_path, monkeypatch):
    # The launcher passes a table entry's config keys (never its measurements) to the kernel: run one through
    # the interpreter by letting the CPU "device" look up the table.
    entry = dict(BLOCK_M=32, BLOCK_N=64, GROUP_M=2, num_warps=4, num_stages=3, median_ms=0.1, default_ms=0.2)
    _table(tmp_path, monkeypatch, {k.tuning_key(40, 136, 200, (128, 128)): entry})
    seen = {}
    real = k.tuned_config

    def lookup(M, N, K, block_size, device, gpu_name=None):
        seen["cfg"] = real(M, N, K, block_size, "cuda:0")
        return seen["cfg"]

    monkeypatch.setattr(k, "tuned_config", lookup)
    torch.manual_seed(9)
    x, w = torch.randn(40, 200, device=DEV), torch.randn(136, 200, device=DEV)
    wq, ws = k.quantize_fp8_block(w, (128, 128))
    xq, xs = k.quantize_fp8_per_token_group(x, 128)
    y = k.fp8_block_gemm_triton(xq, xs, wq, ws, (128, 128), out_dtype=torch.float32)
    assert seen["cfg"] == dict(BLOCK_M=32, BLOCK_N=64, GROUP_M=2, num_warps=4, num_stages=3)
    ref = k.fp8_linear_ref(xq.double(), xs.double(), wq.double(), ws.double(), None, torch.float64, (128, 128))
    assert rel(y, ref) < _tol()


LLAMA_SHAPES = [(4096, 12288), (4096, 4096), (4096, 22016), (11008, 4096), (4096, 6144), (4096, 28672),
                (14336, 4096), (8192, 10240), (8192, 8192), (8192, 57344), (28672, 8192)]


def test_tuner_candidates_are_valid_for_llama_shapes():
    from harness.metrics.kernels import MODEL_SHAPES
    from kernels import fp8_tune

    assert sorted(LLAMA_SHAPES) == sorted({s for layers in MODEL_SHAPES.values() for s in layers.values()})
    params = set(k._fp8_gemm_kernel.arg_names) | {"num_warps", "num_stages"}
    for K, N in LLAMA_SHAPES:
        for M in (1, 16, 128, 1024, 4096):
            for block in ((128, 128), None):
                cands = fp8_tune.candidates(M, N, K, block)
                assert 4 <= len(cands) <= 20, (M, N, K, block, len(cands))
                assert len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)  # no duplicates
                for cfg in cands + [k.default_gemm_config(M, block is not None)]:
                    assert set(cfg) <= set(k.CONFIG_KEYS) and set(cfg) - {"BLOCK_K"} <= params
                    bk = block[1] if block else cfg.get("BLOCK_K", 128)
                    for key in ("BLOCK_M", "BLOCK_N"):
                        assert k._pow2(cfg[key]) and cfg[key] >= 16
                    assert bk in (64, 128) and cfg["num_warps"] in (4, 8) and cfg["num_stages"] >= 2
                    assert fp8_tune.smem_bytes(cfg, bk) <= fp8_tune.SMEM_BYTES
                    if block:  # accumulator + one K block's product per thread stay in registers
                        assert cfg["BLOCK_M"] * cfg["BLOCK_N"] <= 64 * 32 * cfg["num_warps"], cfg
                        assert "BLOCK_K" not in cfg  # the scale block is the K step


def test_gemv_tuner_candidates_cover_the_llama_shapes():
    # every Llama shape gets GEMV configs to time at M = 1-4, each a valid fp8_gemv_triton config whose split
    # leaves 2-16 programs per SM of an H100 (132 SMs); at M > 1 the per-row accumulators stay <= 8K floats
    from kernels import fp8_tune

    for K, N in LLAMA_SHAPES:
        for M in (1, 2, 4):
            cands = fp8_tune.gemv_candidates(M, N, K, 132)
            assert 8 <= len(cands) <= 80, (M, N, K, len(cands))
            assert len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)
            for cfg in cands:
                assert set(cfg) == set(k.GEMV_CONFIG_KEYS)
                assert k._pow2(cfg["block_n"]) and k._pow2(cfg["block_k"]) and cfg["num_warps"] in (2, 4, 8)
                assert 2 * 132 <= -(-N // cfg["block_n"]) * cfg["split_k"] <= 16 * 132
                assert M == 1 or cfg["block_n"] * cfg["block_k"] <= 8192


def test_gemv_reads_its_tuned_entry(monkeypatch, tmp_path):
    # a tuned table entry for (N, K, M-bucket) on this GPU is what the GEMV launches with (the lookup is faked
    # to run on CPU: the table is keyed by GPU name)
    table = {"FakeGPU": {k.gemv_tuning_key(1, 40, 256): dict(block_n=16, block_k=32, split_k=4, num_warps=2,
                                                           num_stages=2, median_ms=0.01)}}
    path = tmp_path / "fp8.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv(k.TUNING_ENV, str(path))
    monkeypatch.setattr(k, "lookup", lambda p, device, key, keys, name: tuning.entry(
        tuning.load_table.__wrapped__(p), "FakeGPU", key, keys))
    assert k.default_gemv_config(1, 40, 256, DEV) == dict(block_n=16, block_k=32, split_k=4, num_warps=2,
                                                          num_stages=2)
    assert k.default_gemv_config(2, 40, 256, DEV)["block_k"] == 128  # M-bucket 2: heuristics


def test_auto_takes_the_gemv_only_where_the_table_measured_it_faster(monkeypatch, tmp_path):
    # entries with the GEMV faster than _scaled_mm (M = 1), slower (M-bucket 2), and without a _scaled_mm time
    # (M-bucket 4); off CUDA, never
    key = k.gemv_tuning_key
    table = {"FakeGPU": {key(1, 64, 256): dict(block_n=16, block_k=32, split_k=1, num_warps=4, num_stages=2,
                                                median_ms=0.010, scaled_mm_ms=0.012),
                         key(2, 64, 256): dict(block_n=16, block_k=32, split_k=1, num_warps=4, num_stages=2,
                                                median_ms=0.020, scaled_mm_ms=0.012),
                         key(4, 64, 256): dict(block_n=16, block_k=32, split_k=1, num_warps=4, num_stages=2,
                                                median_ms=0.010)}}
    path = tmp_path / "fp8.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv(k.TUNING_ENV, str(path))
    monkeypatch.setattr(k, "_gpu_name", lambda index: "FakeGPU")
    cuda = torch.device("cuda", 0)
    assert k.gemv_beats_scaled_mm(1, 64, 256, cuda)
    assert not k.gemv_beats_scaled_mm(2, 64, 256, cuda)
    assert not k.gemv_beats_scaled_mm(4, 64, 256, cuda)
    assert not k.gemv_beats_scaled_mm(1, 64, 512, cuda)  # no entry
    assert not k.gemv_beats_scaled_mm(1, 64, 256, torch.device("cpu"))
    assert not k.gemv_beats_scaled_mm(0, 64, 256, cuda)  # no rows: nothing to launch


def test_gemv_of_no_rows_is_empty():
    w_q, w_s = k.quantize_fp8_per_tensor(torch.randn(24, 64, device=DEV))
    if k.triton is not None:
        assert k.fp8_gemv_triton(torch.randn(0, 64, device=DEV), w_q, w_s).shape == (0, 24)


def test_tuner_skips_failing_and_wrong_configs(monkeypatch):
    # the tuners' timing loop (GEMMs and GEMV): a config that raises is skipped, one that disagrees with the
    # reference is rejected, the rest are timed (the GPU timer is faked: it runs the call once)
    from kernels import fp8_tune, timing

    monkeypatch.setattr(timing, "graph_time_ms", lambda fn, warmup, iters, flush: (fn(), (0.5, 0.4, 0.6, "x"))[1])
    ref = torch.ones(4)

    def run(config):
        if config["c"] == 0:
            raise RuntimeError("out of resources")
        return ref * (2.0 if config["c"] == 1 else 1.0)

    logs = []
    got = fp8_tune._time_configs(run, ref, [{"c": 0}, {"c": 1}, {"c": 2}], 3, None, logs.append, None)
    assert got == [(0.5, {"c": 2})]
    assert "skipped {'c': 0}: RuntimeError" in logs[0] and "rejected (rel err 1.00e+00)" in logs[1]


def test_auto_routes_to_the_gemv_only_for_the_scheme_it_was_timed_with(monkeypatch):
    # the table's GEMV-vs-_scaled_mm timings are of dynamic per-tensor activations and per-tensor weights: other
    # schemes stay on _scaled_mm even where the table says the GEMV won (routing only: both launchers are faked)
    calls = []
    monkeypatch.setattr(k, "fp8_supported", lambda device: True)
    monkeypatch.setattr(k, "gemv_beats_scaled_mm", lambda M, N, K, device: True)
    monkeypatch.setattr(k, "fp8_gemv_triton", lambda *a, **kw: calls.append("gemv"))
    monkeypatch.setattr(k, "scaled_mm", lambda *a, **kw: calls.append("scaled_mm"))
    x = torch.randn(1, 64)
    wq, ws = k.quantize_fp8_per_tensor(torch.randn(32, 64))
    wqc, wsc = k.quantize_fp8_per_channel(torch.randn(32, 64))
    k.fp8_linear(x, wq, ws)
    k.fp8_linear(x, wq, ws, act_granularity="token")
    k.fp8_linear(x, wqc, wsc)
    k.fp8_linear(x, wq, ws, activation_scheme="static", input_scale=torch.tensor([0.1]))
    k.fp8_linear(torch.randn(8, 64), wq, ws)  # M > GEMV_MAX_M
    assert calls == ["gemv", "scaled_mm", "scaled_mm", "scaled_mm", "scaled_mm"]
