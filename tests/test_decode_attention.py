"""Split-KV decode attention (kernels/attention.py) against SDPA, and the model.attn_implementation=split_kv glue
(harness/attention.py) in a tiny Llama's static-cache decode, eager and compiled (interpreted on CPU)."""

import pytest
import torch
from transformers import LlamaConfig

from harness import attention as glue
from harness.metrics.decode import StaticDecoder
from harness.models import random_model
from kernels import attention as k

DEV = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(k.triton is None, reason="Triton is not installed")


def _inputs(B, H, Hk, N, D, dtype, filled=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, kk, v = (torch.randn(shape, generator=gen).to(dtype).to(DEV) for shape in
                ((B, H, 1, D), (B, Hk, N, D), (B, Hk, N, D)))
    mask = None
    if filled is not None:  # a static cache: the first filled[b] slots written, the rest hidden
        mask = torch.arange(N)[None, None, None, :] < torch.tensor(filled)[:, None, None, None]
        mask = mask.to(DEV)
    return q, kk, v, mask


@needs_triton
@pytest.mark.parametrize("B,H,Hk,N,D,dtype,filled,splits", [
    (1, 4, 4, 70, 64, torch.float32, [52], None),  # MHA, the tail of the cache hidden
    (2, 8, 2, 100, 32, torch.bfloat16, [97, 40], 3),  # GQA (4 query heads a KV head), uneven splits
    (3, 4, 1, 33, 16, torch.float16, None, 1),  # MQA, no mask, one split
    (1, 2, 2, 128, 128, torch.float32, [128], 16),  # every split one block; all slots attend
    (2, 4, 2, 64, 32, torch.float32, [5, 64], 4),  # splits with no visible key (their partials weigh 0)
])
def test_split_kv_attention_matches_sdpa(B, H, Hk, N, D, dtype, filled, splits):
    q, kk, v, mask = _inputs(B, H, Hk, N, D, dtype, filled)
    got = k.decode_attention_triton(q, kk, v, mask, splits=splits, block_n=16)
    ref = k.decode_attention_ref(q, kk, v, mask)
    assert got.shape == (B, 1, H, D) and got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # 16-bit outputs: one rounding of the result
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)


@needs_triton
def test_the_last_split_combines_in_the_same_launch_and_leaves_the_counters_zero():
    # one launch: the last split of each (sequence, head) to arrive combines; the arrival counters (the shared
    # split-K workspace's) are zero again after every call, so calls repeat exactly, with one split or many
    from kernels import splitk

    q, kk, v, mask = _inputs(2, 4, 2, 96, 32, torch.float32, [90, 17])
    ref = k.decode_attention_ref(q, kk, v, mask)
    for splits in (3, 1, 3):  # 96 keys in blocks of 16: 3 splits of 32 keys
        got = k.decode_attention_triton(q, kk, v, mask, splits=splits, block_n=16)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        assert not splitk.workspace(q.device, 1, 8)[1].any()


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs an sm_90+ GPU")
def test_under_programmatic_launch_it_reads_what_the_kernel_before_wrote_eager_and_in_a_cuda_graph(
        same_under_pdl):
    # PDL lets the kernel start while the one writing its query still runs: here a W4A16 gemv that lets its
    # dependents launch as soon as it starts. The attention's wait orders its reads after the gemv, so a graph
    # replayed with new gemv inputs gives their result
    from kernels import w4a16

    gen = torch.Generator().manual_seed(5)
    K, H, D = 512, 32, 128
    layer = dict(qweight=torch.randint(-2**31, 2**31 - 1, (K // 8, H * D), generator=gen, dtype=torch.int32),
                 scales=torch.rand(K // 128, H * D, generator=gen) * 0.02, zeros=torch.rand(K // 128, H * D,
                                                                                               generator=gen) * 0.1)
    layer = {n: t.to(DEV) if n == "qweight" else t.to(torch.bfloat16).to(DEV) for n, t in layer.items()}
    tile = dict(path="gemv", block_n=128, block_k=64, split_k=4, num_warps=1, validate=False)
    _, kk, v, mask = _inputs(1, H, H, 320, D, torch.bfloat16, [300], seed=1)

    def step(x):  # gemv -> q [1, H, 1, D] -> attention
        q = w4a16.w4a16_matmul_triton(x, layer["qweight"], layer["scales"], layer["zeros"], None, 128, 4,
                                      **tile).view(1, H, 1, D)
        return k.decode_attention_triton(q, kk, v, mask)

    xs = [torch.randn(1, K, generator=gen).to(torch.bfloat16).to(DEV) for _ in range(2)]
    same_under_pdl(step, xs, lambda got, want: torch.allclose(got, want, atol=1e-2))


def test_inputs_the_kernel_does_not_serve_are_named():
    q, kk, v, mask = _inputs(1, 4, 2, 16, 32, torch.float32, [9])
    assert k.check_inputs(q, kk, v, mask) is None
    assert "2 query tokens" in k.check_inputs(q.expand(1, 4, 2, 32), kk, v)
    assert "head dim 24" in k.check_inputs(q[..., :24], kk[..., :24], v[..., :24])
    assert "boolean [B, 1, 1, N]" in k.check_inputs(q, kk, v, mask.float())
    assert "H not a multiple" in k.check_inputs(q[:, :3], kk, v)
    if k.triton is not None:
        with pytest.raises(ValueError, match="decode attention: 2 query tokens"):
            k.decode_attention_triton(q.expand(1, 4, 2, 32), kk, v)


def _tiny():
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return random_model(cfg, torch.float32, torch.device(DEV)).eval()


@needs_triton
def test_split_kv_decode_equals_sdpa_decode(monkeypatch):
    # the same tiny Llama decoding from the same prompt: sdpa, then split_kv; the kernel serves every decode step
    # (the prefill stays on SDPA), and logits and tokens agree
    torch.manual_seed(0)
    model = _tiny()
    prompt = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1)).to(DEV)
    dec = StaticDecoder(model, 2, 6, 5)
    dec.prefill(prompt)
    ref = [dec.step().clone() for _ in range(4)]
    calls = []
    real = k.decode_attention_triton
    monkeypatch.setattr(k, "decode_attention_triton", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    assert glue.set_attention(model, "split_kv") == glue.SPLIT_KV
    dec = StaticDecoder(model, 2, 6, 5)
    dec.prefill(prompt)
    got = [dec.step().clone() for _ in range(4)]
    assert len(calls) == 4 * 2 and all(s == (2, 4, 1, 16) for s in calls)  # 4 steps x 2 layers
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    glue.set_attention(model, "sdpa")


@needs_triton
def test_split_kv_decode_compiles_to_one_graph():
    # the kernel is one opaque op (quantbench::decode_attention) inside the compiled step: no graph breaks, and
    # the compiled steps give the eager split_kv logits
    torch.manual_seed(0)
    model = _tiny()
    glue.set_attention(model, "split_kv")
    prompt = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(2)).to(DEV)
    dec = StaticDecoder(model, 1, 6, 6)
    dec.prefill(prompt)
    ref = [dec.step().clone() for _ in range(2)]
    dec.compile(prompt)
    assert dec.compile_stats == {"graphs": 1, "graph_breaks": 0}
    dec.prefill(prompt)
    got = [dec.step().clone() for _ in range(2)]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_attention_implementation_is_refused_before_loading():
    from harness.config import ModelConf
    from harness.models import load_model

    with pytest.raises(ValueError, match=r"model.attn_implementation='flash'; use one of \['eager', 'sdpa', "
                                         r"'split_kv'\]"):
        load_model(ModelConf(name_or_path="/nonexistent", attn_implementation="flash"), torch.device("cpu"))


def test_a_decode_step_the_kernel_cannot_take_runs_sdpa_and_says_why():
    # a float mask is not the boolean key mask the kernel reads: SDPA computes the step, with a warning naming why
    q, kk, v, mask = _inputs(1, 4, 2, 16, 32, torch.float32, [9])
    fmask = torch.where(mask, 0.0, float("-inf"))
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    with pytest.warns(UserWarning, match="decode attention on SDPA .*boolean"):
        out, _ = glue.split_kv_attention(module, q, kk, v, fmask)
    torch.testing.assert_close(out, k.decode_attention_ref(q, kk, v, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra", [{"position_bias": 1}, {"s_aux": 1}, {"softcap": 30.0}])
def test_terms_the_kernel_does_not_add_send_the_step_to_sdpa(monkeypatch, extra):
    # a position bias, sink logits or a soft cap change the result: the glue must not hand such a step to the
    # kernel (it would drop the term silently); it runs SDPA's function and says why
    q, kk, v, mask = _inputs(1, 4, 2, 16, 32, torch.float32, [9])
    seen = {}
    monkeypatch.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward",
                        lambda *a, **kw: seen.update(kw) or ("sdpa", None))
    monkeypatch.setattr(glue, "_WARNED", set())
    with pytest.warns(UserWarning, match=f"{next(iter(extra))} given"):
        out, _ = glue.split_kv_attention(torch.nn.Module(), q, kk, v, mask, **extra)
    assert out == "sdpa" and seen[next(iter(extra))] == extra[next(iter(extra))]


def test_speedup_setups_keep_attention_implementations_apart():
    from harness.speedup import setup

    rec = {"metrics": {"throughput": {"decode_mode": "compile"}}, "model": {"fused_projections": 4},
           "config": {"model": {"attn_implementation": "split_kv"}}}
    assert setup(rec) == "compile+fused+attn=split_kv"
    rec["config"]["model"]["attn_implementation"] = "sdpa"
    assert setup(rec) == "compile+fused"
