"""AutoAWQ GEMM layout: known-answer words (the interleave), pack/unpack, and the kernel after repacking."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import pytest

from methods import QuantLinear
from methods.awq import format as fmt
from methods.awq.method import AWQConfig
from methods.loader import load_layer_tensors

DEV = "cuda" if torch.cuda.is_available() else "cpu"
ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ's order_map in WQLinear_GEMM.from_linear


pytestmark = pytest.mark.usefixtures("one_thread")


def word(x: int) -> int:
    """A uint32 bit pattern as the int32 torch stores."""
    return x - 2**32 if x >= 2**31 else x


def autoawq_pack(codes: torch.Tensor) -> torch.Tensor:
    """AutoAWQ's packing loop, written out: nibble i of word col holds column col * 8 + order_map[i]."""
    out = torch.zeros(codes.shape[0], codes.shape[1] // 8, dtype=torch.int64)
    for col in range(codes.shape[1] // 8):
        for i in range(8):
            out[:, col] |= codes[:, col * 8 + ORDER[i]].long() << (4 * i)
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def autoawq_unpack(words: torch.Tensor) -> torch.Tensor:
    """AutoAWQ's unpack_awq + reverse_awq_order: shift out nibbles 0..7, then reorder columns."""
    nib = (words[:, :, None] >> torch.arange(0, 32, 4)[None, None, :]) & 15
    nib = nib.reshape(words.shape[0], -1)
    rev = torch.arange(nib.shape[1]).view(-1, 8)[:, [0, 4, 1, 5, 2, 6, 3, 7]].reshape(-1)
    return nib[:, rev]


def test_known_answer_words():
    # columns 0..7 hold codes 0..7: nibbles (low to high) hold columns 0,2,4,6,1,3,5,7
    assert fmt.pack_columns(torch.arange(8).reshape(1, 8)).item() == 0x75316420
    assert fmt.unpack_columns(torch.tensor([[0x75316420]], dtype=torch.int32)).tolist() == [list(range(8))]
    # columns 0..7 hold codes 15..8: the top nibble is column 7 (code 8), the sign bit is set
    w = torch.tensor([[word(0x8ACE9BDF)]], dtype=torch.int32)
    assert fmt.unpack_columns(w).tolist() == [[15, 14, 13, 12, 11, 10, 9, 8]]
    assert fmt.pack_columns(torch.arange(15, 7, -1).reshape(1, 8)).item() == word(0x8ACE9BDF)
    # a single code in column 1 sits in nibble 4 (bits 16..19)
    one = torch.zeros(1, 8, dtype=torch.int32)
    one[0, 1] = 5
    assert fmt.pack_columns(one).item() == 0x00050000


def test_known_answer_qweight_and_qzeros_in_a_layer():
    K, N, gs = 16, 16, 8
    qweight = torch.zeros(K, N // 8, dtype=torch.int32)
    qweight[3, 1] = 0x75316420  # row 3, columns 8..15 = 0..7
    qzeros = torch.zeros(K // gs, N // 8, dtype=torch.int32)
    qzeros[1, 0] = word(0x8ACE9BDF)  # group 1, columns 0..7 = 15..8
    layer = fmt.from_checkpoint(qweight, qzeros, torch.ones(K // gs, N, dtype=torch.float16), gs)
    assert layer.codes[3, 8:].tolist() == list(range(8)) and layer.codes[3, :8].tolist() == [0] * 8
    assert layer.zeros[1, :8].tolist() == [15, 14, 13, 12, 11, 10, 9, 8] and layer.zeros[0].sum() == 0
    w = layer.dequantize()  # [N, K] = (q - z) * s
    assert w[9, 3].item() == 1 - 0 and w[0, 8].item() == 0 - 15


def test_pack_unpack_round_trip_matches_autoawq():
    codes = torch.randint(0, 16, (32, 48), generator=torch.Generator().manual_seed(0))
    packed = fmt.pack_columns(codes)
    assert packed.dtype == torch.int32 and packed.shape == (32, 6)
    assert torch.equal(packed, autoawq_pack(codes))
    assert torch.equal(fmt.unpack_columns(packed), codes.to(torch.int32))
    assert torch.equal(autoawq_unpack(packed).to(torch.int32), codes.to(torch.int32))
    with pytest.raises(fmt.AWQFormatError, match="outside"):
        fmt.pack_columns(torch.full((1, 8), 16))


def awq_layer(K, N, gs, bias=False, seed=0):
    """A QuantLinear loaded from AutoAWQ-packed random tensors; returns (layer, float64 W [K, N], tensors)."""
    gen = torch.Generator().manual_seed(seed)
    G = -(-K // gs)
    q = torch.randint(0, 16, (K, N), generator=gen)
    z = torch.randint(0, 16, (G, N), generator=gen)
    s = (torch.rand(G, N, generator=gen) * 0.02 + 0.002).half()
    tensors = {"qweight": autoawq_pack(q), "qzeros": autoawq_pack(z), "scales": s}
    if bias:
        tensors["bias"] = torch.randn(N, generator=gen).half()
    cfg = AWQConfig.from_dict({"group_size": gs, "backend": "triton" if DEV == "cuda" or
                               os.environ.get("TRITON_INTERPRET") == "1" else "torch"})
    layer = QuantLinear(K, N, bias, cfg.get_linear_method(), params_dtype=torch.float32, device=DEV)
    load_layer_tensors(layer, tensors, "layer")
    layer.method.process_weights_after_loading(layer)
    g = torch.arange(K) // gs
    w64 = (q.double() - z.double()[g]) * s.double()[g]
    return layer, w64, tensors


@pytest.mark.parametrize("dtype,K,gs", [(torch.float16, 128, 64), (torch.float32, 128, 128),
                                        (torch.float32, 96, 64)])  # the last: a short last group
def test_kernel_matches_float64_after_repacking(dtype, K, gs):
    N = 64
    layer, w64, tensors = awq_layer(K, N, gs, bias=True)
    x = torch.randn(5, K, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = layer(x.to(DEV)).cpu()
    ref = x.double() @ w64 + tensors["bias"].double()
    err = ((y.double() - ref).norm() / ref.norm()).item()
    exact = dtype == torch.float32 and DEV == "cpu"  # on GPU fp32 goes through tf32 tl.dot
    assert y.dtype == dtype and err < (1e-5 if exact else 2e-3), err
    torch.testing.assert_close(layer.method.apply(layer, x.to(DEV)).cpu(), y)


def test_repacked_layer_exports_the_checkpoint_bit_for_bit():
    layer, _, tensors = awq_layer(64, 32, 32, bias=True)
    assert layer.qweight.shape == (64 // 8, 32)  # kernel layout after loading
    out = layer.method.checkpoint_tensors(layer)
    assert sorted(out) == sorted(tensors)
    for key, t in tensors.items():
        assert torch.equal(out[key].cpu(), t), key


def test_layer_shapes_the_layout_cannot_hold():
    cfg = AWQConfig.from_dict({"group_size": 32})
    with pytest.raises(fmt.AWQFormatError, match="out_features=20 must be multiples of 8"):
        QuantLinear(64, 20, False, cfg.get_linear_method(), params_dtype=torch.float32)
    with pytest.raises(fmt.AWQFormatError, match="in_features=44 and out_features=16 must be multiples of 8"):
        QuantLinear(44, 16, False, cfg.get_linear_method(), params_dtype=torch.float32)
