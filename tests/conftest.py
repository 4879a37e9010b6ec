"""Shared fixtures: the embedded default model and corpus (installed from the package index on first use)."""

import os

if os.environ.get("CUDA_VISIBLE_DEVICES") is None:
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")  # CI has no GPU: Triton kernels run interpreted
    except ImportError:
        pass

import pytest
import torch

from harness.config import DatasetConf

EVAL_SEQ_LEN = 512
EVAL_WINDOWS = 8  # 4,088 scored tokens: seconds on 2 cores, enough to separate a broken model from a good one


@pytest.fixture(scope="session")
def model_dir():
    from harness.assets import embedded_model_dir

    return embedded_model_dir("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def eval_ids(tokenizer):
    from harness.data import load_token_ids

    return load_token_ids(tokenizer, DatasetConf())


@pytest.fixture()
def fresh_model(model_dir):
    """A new float32 copy of the default model (tests quantize it in place)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def eval_ppl(eval_ids):
    """Perplexity on the test slice of the default corpus."""
    from harness.metrics.perplexity import perplexity

    def run(model):
        return perplexity(model, eval_ids, seq_len=EVAL_SEQ_LEN, max_windows=EVAL_WINDOWS, progress=False)

    return run


@pytest.fixture(scope="session")
def baseline_ppl(model_dir, eval_ppl):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return eval_ppl(model).perplexity


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP's spinning slows them 100x.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _same_under_pdl(step, inputs, same):
    # step(x) launched under programmatic_launch, eager and replayed from a CUDA graph with the graph's input
    # rewritten between replays, gives what the plain launches gave for each input (same(got, want))
    from kernels.launch import programmatic_launch

    wants = [step(x) for x in inputs]
    src = inputs[0].clone()
    with programmatic_launch():
        assert all(same(step(x), want) for x, want in zip(inputs, wants))  # also compiles the PDL variants
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step(src)
    for _ in range(3):
        for x, want in zip(inputs, wants):
            src.copy_(x)
            graph.replay()
            assert same(out, want)


@pytest.fixture
def same_under_pdl():
    """Checks a kernel chain under programmatic dependent launch (GPU tests): `_same_under_pdl`."""
    return _same_under_pdl
