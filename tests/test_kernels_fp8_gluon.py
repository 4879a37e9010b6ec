"""The Gluon block-scaled FP8 GEMM (kernels/fp8_gluon.py): its dispatch and refusals everywhere, its sm_90 binary
built on this CPU (register-A FP8 wgmmas, no write to their A registers in flight), and on a Hopper GPU its
results against a float64 reference (Gluon kernels do not run in Triton's interpreter)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from kernels import fp8 as k
from kernels import fp8_gluon as g

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9 and g.gluon is not None
needs_hopper = pytest.mark.skipif(not HOPPER, reason="the Gluon kernel runs on Hopper GPUs only (run on the "
                                                     "device machine by .ci/gpu/stage_fp8_gluon.sh)")


def test_unsupported_names_the_reason_and_fp8_linear_refuses_with_it():
    x = torch.zeros(4, 256, dtype=k.FP8_DTYPE)
    why = g.unsupported(x, x, (128, 128))
    if not torch.cuda.is_available():
        assert why and ("Hopper" in why or "Gluon" in why or "INTERPRET" in why), why
        with pytest.raises(ValueError, match="backend='gluon' cannot run here"):
            k.fp8_linear(torch.randn(4, 256), *k.quantize_fp8_block(torch.randn(256, 256), (128, 128)),
                         block_size=(128, 128), backend="gluon")
    with pytest.raises(ValueError, match="block scales"):
        k.fp8_linear(torch.randn(4, 256), *k.quantize_fp8_per_tensor(torch.randn(256, 256)), backend="gluon")


def test_auto_follows_the_tuned_choice_else_gluon_from_gluon_min_m_rows_where_it_runs(monkeypatch):
    x, w = torch.zeros(1, 256), torch.zeros(512, 256)
    monkeypatch.setattr(g, "unsupported", lambda *a: None)
    monkeypatch.setattr(k, "tuned_config", lambda *a: None)  # untuned: the heuristic
    assert k.block_gemm_kernel(k.GLUON_MIN_M - 1, x, w, (128, 128)) == "triton"
    assert k.block_gemm_kernel(k.GLUON_MIN_M, x, w, (128, 128)) == "gluon"
    seen = []

    def table(M, N, K, block_size, device):  # a tuned entry decides, keyed by this call's shape
        seen.append((M, N, K, block_size))
        return {"BLOCK_M": 64, "kernel": "gluon" if M == 256 else "triton"}

    monkeypatch.setattr(k, "tuned_config", table)
    assert k.block_gemm_kernel(256, x, w, (128, 128)) == "gluon"
    assert k.block_gemm_kernel(4096, x, w, (128, 128)) == "triton"
    assert seen[0] == (256, 512, 256, (128, 128))
    monkeypatch.setattr(g, "unsupported", lambda *a: "needs a Hopper GPU")
    assert k.block_gemm_kernel(256, x, w, (128, 128)) == "triton"


def test_gluon_kernel_binary_has_register_a_fp8_wgmmas_and_no_write_to_their_a_registers_in_flight():
    # An 8-bit A operand cannot be passed through the wgmma wait's deps, so nothing in the IR keeps the compiler from
    # reusing its registers while the wgmma still reads them (the race kernels/w4a16.py's frag path had): the
    # binary is checked instead. Built with the installed Triton (3.9 here, 3.6 on the device machine).
    if g.gluon is None:
        pytest.skip("this Triton has no Gluon Hopper API")
    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "kernels.sass", "fp8-gluon"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    print(stats)
    assert stats["register_a_wgmmas"] > 0 and stats["qgmma"] >= 8
    assert stats["hazards"] == []
    assert stats["shared"] <= 227 * 1024  # the H100's shared memory per block
    # The consumers are held to 240 registers (two accumulators, a product tile, A): the binary the H100 timed
    # (triton 3.6) spills 46 registers' worth, triton 3.9 62. A variant that spilled 854 (a runtime branch around
    # the wgmmas) would be caught here.
    assert stats["spills"] <= 64
    assert "240" in stats["setmaxnreg"] and "24" in stats["setmaxnreg"]  # consumers up, loader down


def test_gluon_entry_point_checks_its_inputs_before_the_gpu(monkeypatch):
    monkeypatch.setattr(g, "unsupported", lambda *a: None)  # past the device check: the input checks come next
    xq = torch.zeros(4, 256, dtype=k.FP8_DTYPE)
    wq = torch.zeros(384, 256, dtype=k.FP8_DTYPE)
    xs, ws = torch.ones(4, 2), torch.ones(3, 2)
    with pytest.raises(ValueError, match="do not chain"):
        g.fp8_block_gemm_gluon(xq, xs, wq[:, :128], ws)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        g.fp8_block_gemm_gluon(xq.view(torch.float8_e5m2), xs, wq, ws)
    with pytest.raises(ValueError, match=r"expected \(4, 2\) and \(3, 2\)"):
        g.fp8_block_gemm_gluon(xq, torch.ones(4, 1), wq, ws)
    assert g.fp8_block_gemm_gluon(xq[:0], xs[:0], wq, ws).shape == (0, 384)


def _reference(xq, xs, wq, ws, b):
    K = xq.shape[1]
    y = (xq.double() * xs.double().repeat_interleave(128, 1)[:, :K]) @ \
        k.dequantize_fp8_block(wq, ws, (128, 128)).double().t()
    return y if b is None else y + b.double()


@needs_hopper
@pytest.mark.parametrize("M,N,K", [(1, 256, 256), (128, 512, 1024), (130, 384, 640), (257, 1000, 1008),
                                   (1024, 2048, 4096)])
@pytest.mark.parametrize("bias,out_dtype", [(False, torch.bfloat16), (True, torch.float32), (True, torch.float16)])
def test_gluon_block_gemm_matches_float64(M, N, K, bias, out_dtype):
    # partial M tiles (130, 257), N past the last 256-column tile (384: its upper half empty; 1000: a partial
    # scale block), K with an odd number of blocks (640) and a partial last block (1008)
    torch.manual_seed(M + N + K)
    x = torch.randn(M, K, device="cuda")
    w = torch.randn(N, K, device="cuda")
    b = torch.randn(N, device="cuda", dtype=out_dtype) if bias else None
    wq, ws = k.quantize_fp8_block(w, (128, 128))
    xq, xs = k.per_token_group_quant_fp8_triton(x.bfloat16(), 128)
    ref = _reference(xq, xs, wq, ws, b)
    for _ in range(3):  # the warp-specialised pipeline, several launches
        y = g.fp8_block_gemm_gluon(xq, xs, wq, ws, b, out_dtype)
        assert y.dtype == out_dtype and y.shape == (M, N)
        assert torch.isfinite(y).all()
        err = ((y.double() - ref).norm() / ref.norm()).item()
        print(f"gluon block gemm M={M} N={N} K={K} bias={bias} {out_dtype}: rel err {err:.2e}")
        assert err < (2e-3 if out_dtype == torch.float32 else 5e-3)


@needs_hopper
@pytest.mark.parametrize("M", [256, 4096])
def test_fp8_linear_auto_runs_the_chosen_kernel_and_both_kernels_agree(M):
    torch.manual_seed(0)
    x = torch.randn(M, 1024, device="cuda", dtype=torch.bfloat16)
    wq, ws = k.quantize_fp8_block(torch.randn(768, 1024, device="cuda"), (128, 128))
    chosen = k.block_gemm_kernel(M, x, wq, (128, 128))
    auto = k.fp8_linear(x, wq, ws, block_size=(128, 128))
    assert torch.equal(auto, k.fp8_linear(x, wq, ws, block_size=(128, 128), backend=chosen))
    gluon = k.fp8_linear(x, wq, ws, block_size=(128, 128), backend="gluon")
    triton = k.fp8_linear(x, wq, ws, block_size=(128, 128), backend="triton")
    assert ((gluon.double() - triton.double()).norm() / triton.double().norm()).item() < 5e-3
