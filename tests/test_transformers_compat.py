"""Our top-level package `kernels` shares its name with a PyPI package transformers probes for."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import import_utils


def test_transformers_does_not_mistake_our_kernels_for_hub_kernels():
    import kernels

    assert kernels.__file__ and "quantbench" not in getattr(kernels, "__version__", "")
    import_utils.is_kernels_available.cache_clear()
    assert import_utils.is_kernels_available() is False


def test_transformers_builds_and_runs_a_llama_with_quantbench_installed():
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 10)
    assert torch.equal(out[:, :7], ids)
