"""GPTQ checkpoint layout: hand-built words unpack to known codes (v1 and v2), packing round-trips and agrees
with the W4A16 kernel's packing."""

import pytest
import torch

from kernels import w4a16
from methods.gptq import format as fmt


def word(u32: int) -> int:
    """An unsigned 32-bit pattern as the int32 a checkpoint stores."""
    return u32 - 2**32 if u32 >= 2**31 else u32


def test_qweight_word_unpacks_low_bits_first_along_input_rows():
    # column 0: rows 0..7 = 0..7, rows 8..15 = 8..15 (the high nibble set: a negative int32); column 1: all 15 / 0
    qweight = torch.tensor([[word(0x76543210), word(0xFFFFFFFF)],
                            [word(0xFEDCBA98), word(0x00000000)]], dtype=torch.int32)
    codes = fmt.unpack(qweight, 4, dim=0)
    assert codes.shape == (16, 2)
    assert codes[:, 0].tolist() == list(range(16))
    assert codes[:, 1].tolist() == [15] * 8 + [0] * 8
    assert torch.equal(fmt.pack(codes, 4, dim=0), qweight)


def test_8bit_qweight_word():
    qweight = torch.tensor([[word(0x03020100)], [word(0xFF80017F)]], dtype=torch.int32)
    assert fmt.unpack(qweight, 8, dim=0)[:, 0].tolist() == [0, 1, 2, 3, 0x7F, 0x01, 0x80, 0xFF]


@pytest.mark.parametrize("checkpoint_format,offset", [("gptq", 1), ("gptq_v2", 0)])
def test_qzeros_word_unpacks_along_output_columns_with_the_format_offset(checkpoint_format, offset):
    # Two groups, 8 output columns: the symmetric 4-bit word, and one holding D,C,B,A,3,2,1,0 (low nibble first).
    qzeros = torch.tensor([[word(0x77777777)], [word(0x0123ABCD)]], dtype=torch.int32)
    qweight = torch.zeros(1, 8, dtype=torch.int32)
    layer = fmt.from_checkpoint(qweight, qzeros, torch.ones(2, 8, dtype=torch.float16),
                                torch.zeros(8, dtype=torch.int32), 4, checkpoint_format)
    assert layer.zeros[0].tolist() == [7 + offset] * 8  # v1 symmetric zero point: 2^(4-1) = 8
    assert layer.zeros[1].tolist() == [z + offset for z in (13, 12, 11, 10, 3, 2, 1, 0)]


def test_dequantize_known_answer_with_g_idx():
    # K=8 rows in 2 groups picked by g_idx (act-order style), N=8 columns.
    codes = torch.arange(8, dtype=torch.int32)[:, None].expand(8, 8).contiguous()  # row k holds code k
    g_idx = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0], dtype=torch.int32)
    scales = torch.tensor([[0.5] * 8, [2.0] * 8], dtype=torch.float16)
    zeros = torch.tensor([[1] * 8, [4] * 8], dtype=torch.int32)
    layer = fmt.GPTQLayer(codes=codes, zeros=zeros, scales=scales, g_idx=g_idx, bits=4)
    w = layer.dequantize()  # [N, K]
    expected = [2.0 * (0 - 4), 0.5 * (1 - 1), 2.0 * (2 - 4), 0.5 * (3 - 1), 2.0 * (4 - 4), 0.5 * (5 - 1),
                2.0 * (6 - 4), 0.5 * (7 - 1)]
    assert w[0].tolist() == expected and w.shape == (8, 8)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("checkpoint_format", ["gptq", "gptq_v2"])
def test_checkpoint_round_trip_and_kernel_packing_agree(bits, checkpoint_format):
    torch.manual_seed(0)
    k, n, gs = 64, 32, 16
    lo = 1 if checkpoint_format == "gptq" else 0
    layer = fmt.GPTQLayer(codes=torch.randint(0, 2**bits, (k, n), dtype=torch.int32),
                          zeros=torch.randint(lo, 2**bits, (k // gs, n), dtype=torch.int32),
                          scales=torch.rand(k // gs, n).half() + 0.01,
                          g_idx=fmt.default_g_idx(k, gs), bits=bits)
    t = fmt.to_checkpoint(layer, checkpoint_format)
    per = 32 // bits
    assert t["qweight"].shape == (k // per, n) and t["qweight"].dtype == torch.int32
    assert t["qzeros"].shape == (k // gs, n // per) and t["qzeros"].dtype == torch.int32
    assert t["scales"].dtype == torch.float16 and t["g_idx"].dtype == torch.int32
    assert torch.equal(t["qweight"], w4a16.pack_int_weights(layer.codes, bits))
    back = fmt.from_checkpoint(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits, checkpoint_format)
    for name in ("codes", "zeros", "scales", "g_idx"):
        assert torch.equal(getattr(back, name), getattr(layer, name)), name


def test_v1_cannot_store_zero_point_zero():
    layer = fmt.GPTQLayer(codes=torch.zeros(8, 8, dtype=torch.int32), zeros=torch.zeros(1, 8, dtype=torch.int32),
                          scales=torch.ones(1, 8).half(), g_idx=torch.zeros(8, dtype=torch.int32), bits=4)
    with pytest.raises(fmt.GPTQFormatError, match="v1 cannot store zero 0"):
        fmt.to_checkpoint(layer, "gptq")
    assert fmt.to_checkpoint(layer, "gptq_v2")["qzeros"].eq(0).all()


def test_inconsistent_tensors_are_named():
    with pytest.raises(fmt.GPTQFormatError, match="g_idx values must lie in"):
        fmt.from_checkpoint(torch.zeros(1, 8, dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),
                            torch.ones(1, 8).half(), torch.full((8,), 3, dtype=torch.int32), 4, "gptq")
    with pytest.raises(fmt.GPTQFormatError, match="bits=3"):
        fmt.codes_per_word(3)
