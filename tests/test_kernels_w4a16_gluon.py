"""The warp-specialised Gluon W4A16 GEMM (kernels/w4a16_gluon.py): its refusals everywhere, its sm_90 binary built
on this CPU (register-A wgmmas waited at depth 1, no write to their A registers in flight, no spills), and on a
Hopper GPU its results against the torch reference (Gluon kernels do not run in Triton's interpreter)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from kernels import w4a16 as k
from kernels import w4a16_gluon as g

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9 and g.gluon is not None
needs_hopper = pytest.mark.skipif(not HOPPER, reason="the Gluon kernel runs on Hopper GPUs only (run on the "
                                                     "device machine: pytest tests/test_kernels_w4a16_gluon.py)")


def _layer(K, N, group_size=128, device="cpu"):
    from kernels.w4a16_tune import random_layer

    return random_layer(K, N, device, group_size=group_size)


def test_unsupported_names_the_reason_and_the_path_refuses_with_it(monkeypatch):
    qweight, scales = _layer(256, 64)
    x = torch.randn(4, 256, dtype=torch.float16)
    why = g.unsupported(x, qweight, scales, None, None, 128, 4)
    assert why and ("Hopper" in why or "Gluon" in why or "INTERPRET" in why), why
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cuda_x = type("X", (), {"is_cuda": True, "device": None, "dtype": torch.float16, "shape": (4, 256)})()
    if g.gluon is not None:  # past the device check, the layer checks
        assert "symmetric" in g.unsupported(cuda_x, qweight, scales, torch.zeros(2, 64), None, 128, 4)
        assert "symmetric" in g.unsupported(cuda_x, qweight, scales, None, None, 128, 8)
        assert "fp16" in g.unsupported(cuda_x, qweight, scales.bfloat16(), None, None, 128, 4)
        assert "multiple of 256" in g.unsupported(cuda_x, qweight, scales, None, None, 64, 4)
        assert g.unsupported(cuda_x, qweight, scales, None, None, 128, 4) is None
    with pytest.raises(ValueError):
        k.w4a16_matmul(x, qweight, scales, None, None, 128, 4, backend="triton", path="gluon")


@pytest.mark.parametrize("bm", [256, 128])
def test_gluon_w4a16_binary_waits_at_depth_one_without_a_register_hazards_or_spills(bm):
    if g.gluon is None:
        pytest.skip("this Triton has no Gluon Hopper API")
    env = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "kernels.sass", "w4a16-gluon", "--block-m", str(bm)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    print(stats)
    assert "0x1" in stats["waits"]  # one K-block's wgmmas left running while the next block's A is made
    assert stats["register_a_wgmmas"] > 0 and stats["hazards"] == []
    assert stats["spills"] == 0 and stats["shared"] <= 227 * 1024


@needs_hopper
@pytest.mark.parametrize("M,K,N,group_size,bias", [(1, 256, 64, 128, False), (130, 512, 192, 128, True),
                                                   (300, 1024, 256, 256, False), (513, 2048, 128, -1, True)])
def test_gluon_w4a16_matches_the_reference(M, K, N, group_size, bias):
    # partial token tiles (1, 130, 300, 513 rows; BM 128 and 256), groups of 1, 2 and 16 K-blocks
    from kernels.w4a16_tune import MAX_REL_ERR, rel_err

    torch.manual_seed(M + K)
    qweight, scales = _layer(K, N, group_size, "cuda")
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    b = torch.randn(N, device="cuda", dtype=torch.float16) if bias else None
    ref = k.w4a16_matmul_ref(x, qweight, scales, None, None, group_size, 4, b, validate=False)
    for _ in range(3):
        y = k.w4a16_matmul(x, qweight, scales, None, None, group_size, 4, b, path="gluon")
        assert y.dtype == torch.float16 and y.shape == (M, N) and torch.isfinite(y).all()
        assert rel_err(y, ref) < MAX_REL_ERR
