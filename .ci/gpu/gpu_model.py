"""Shared by the device diagnostics (fp8_decode_diag.py, prefill_profile.py): the Llama-2-7B shape with random
weights on the GPU, quantized by `method` (speed-only layouts, as bench=throughput_gpu builds them), and a
fixed-seed prompt."""

import torch

import methods
from harness.config import ModelConf
from harness.models import load_model


def preset_model(method: str, device: torch.device):
    torch.manual_seed(0)
    model = load_model(ModelConf(name_or_path="preset:llama-2-7b", random_weights=True), device).model
    if method != "none":
        methods.get_method_class(method).from_dict({}).prepare_speed_only(model, progress=False)
    return model


def prompt(batch: int, length: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 32000, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
