"""Offline lm-eval tasks built deterministically from the embedded Wikipedia corpus (no hub, no download).

`python -m harness.eval_tasks` builds them (once, into $QUANTBENCH_HOME/lm_eval_tasks/) and prints the folder,
which lm-eval reads as an include path (`lm_eval --include_path DIR --tasks qb_wiki_lastword ...`). Each task
is a JSONL file plus an lm-eval task YAML; every item keeps its article's URL and title (the text is Wikipedia,
CC BY-SA: the folder's README says so). Items are picked and ordered by SHA-256 of their article's URL, so the
same corpus gives byte-identical files on every machine; the three tasks use disjoint articles.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.assets import cache_home
from harness.data import EMBEDDED_CORPORA
from methods.export import staged_dir

BUILD_VERSION = 1  # bump when the selection rules change: a new folder is built, old records stay comparable
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class OfflineTask:
    name: str
    size: int  # items wanted (the corpus may yield fewer; the manifest says how many)
    description: str
    chance: str  # what a model that ignores the text scores


OFFLINE_TASKS = {t.name: t for t in [
    OfflineTask("qb_wiki_ppl", 100, "rolling log-likelihood of whole articles (150-1000 words): word_perplexity, "
                "byte_perplexity, bits_per_byte, as lm-eval's wikitext task", "n/a (lower is better)"),
    OfflineTask("qb_wiki_lastword", 500, "LAMBADA-style: predict a sentence's last word (>= 4 letters, seen "
                "earlier in its paragraph) from the paragraph before it; acc = greedy exact match, and its perplexity",
                "acc ~0"),
    OfflineTask("qb_wiki_continuation", 500, "HellaSwag-style: a sentence and the first half of the next; pick "
                "its real second half among 4 (3 from other articles); acc and acc_norm", "acc 0.25"),
]}


def _key(article: dict) -> str:
    return hashlib.sha256(article["url"].encode()).hexdigest()


def _sentences(paragraph: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(paragraph.strip()) if s]


def _paragraphs(article: dict) -> list[str]:
    """Body paragraphs: the title line and one-line section headings ("Results.") dropped."""
    lines = article["text"].split("\n")[1:]
    return [line.strip() for line in lines if len(line.split()) >= 12]


def _word(token: str) -> str:
    return token.strip(".,;:!?\"'()[]")


def _lastword_item(article: dict) -> dict | None:
    """The first sentence end, after >= 30 words of its paragraph, whose last word (>= 4 letters) already
    appeared in those words (LAMBADA's property: the word is inferable from the context)."""
    for p in _paragraphs(article):
        sents = _sentences(p)
        for i in range(1, len(sents)):
            words = sents[i].split()
            target = words[-1][:-1] if words[-1].endswith(".") and len(words) >= 4 else ""
            before = sents[max(0, i - 6):i] + [" ".join(words[:-1])]  # at most 6 sentences of context
            context = " ".join(before)
            if (target.isalpha() and len(target) >= 4 and len(context.split()) >= 30
                    and target in {_word(w) for w in context.split()}):
                return {"context": context, "target": target, "url": article["url"], "title": article["title"]}
    return None


def _continuation_item(article: dict) -> dict | None:
    """A sentence (5-60 words) and the next (10-40 words, ending in "."), cut at the middle of the next."""
    for p in _paragraphs(article):
        sents = _sentences(p)
        for prev, sent in zip(sents, sents[1:]):
            words = sent.split()
            if 5 <= len(prev.split()) <= 60 and 10 <= len(words) <= 40 and sent.endswith("."):
                k = len(words) // 2
                return {"context": f"{prev} {' '.join(words[:k])}", "ending": " ".join(words[k:]),
                        "url": article["url"], "title": article["title"]}
    return None


def _with_choices(items: list[dict]) -> list[dict]:
    """Distractors: the real endings of the next items in order (other articles); gold at a hashed position."""
    out = []
    for i, item in enumerate(items):
        others, j = [], i + 1
        while len(others) < 3:
            ending = items[j % len(items)]["ending"]
            if ending != item["ending"] and ending not in others:
                others.append(ending)
            j += 1
        label = int(hashlib.sha256(item["url"].encode()).hexdigest()[:8], 16) % 4
        choices = others[:label] + [item["ending"]] + others[label:]
        out.append({"context": item["context"], "choices": choices, "label": label, "url": item["url"],
                    "title": item["title"]})
    return out


def build_items(articles: list[dict]) -> dict[str, list[dict]]:
    """Items of each offline task, from the corpus articles (deterministic; disjoint articles per task)."""
    order = sorted(articles, key=_key)
    used: set[str] = set()

    def take(task: str, make) -> list[dict]:
        items = []
        for a in order:
            if len(items) == OFFLINE_TASKS[task].size:
                break
            if a["url"] in used:
                continue
            item = make(a)
            if item is not None:
                used.add(a["url"])
                items.append(item)
        return items

    ppl = take("qb_wiki_ppl", lambda a: {"text": a["text"], "url": a["url"], "title": a["title"]}
               if 150 <= len(a["text"].split()) <= 1000 else None)
    lastword = take("qb_wiki_lastword", _lastword_item)
    continuation = _with_choices(take("qb_wiki_continuation", _continuation_item))
    return {"qb_wiki_ppl": ppl, "qb_wiki_lastword": lastword, "qb_wiki_continuation": continuation}


def _task_yaml(name: str, data_file: Path) -> dict:
    """The lm-eval task config (same fields as lm-eval's wikitext / lambada_openai / hellaswag tasks)."""
    common = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file)}},
              "test_split": "test", "metadata": {"version": BUILD_VERSION}}
    if name == "qb_wiki_ppl":
        return common | {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                         "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity",
                                                                 "bits_per_byte")]}
    if name == "qb_wiki_lastword":
        return common | {"output_type": "loglikelihood", "doc_to_text": "{{context}}",
                         "doc_to_target": "{{' ' + target}}",
                         "metric_list": [{"metric": "perplexity", "aggregation": "perplexity",
                                          "higher_is_better": False},
                                         {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    return common | {"output_type": "multiple_choice", "doc_to_text": "{{context}}", "doc_to_target": "{{label}}",
                     "doc_to_choice": "{{choices}}",
                     "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                     for m in ("acc", "acc_norm")]}


_README = """# quantbench offline lm-eval tasks (generated by `python -m harness.eval_tasks`; do not edit)

Built from {n_articles} English Wikipedia articles of the embedded corpus ({source}). The text is Wikipedia
content, licensed CC BY-SA (https://creativecommons.org/licenses/by-sa/4.0/); every item carries its article's
URL and title for attribution. Build version {version}.

{table}
"""


def write_tasks(directory: Path, items: dict[str, list[dict]], source: str, n_articles: int,
                final_dir: Path | None = None) -> dict:
    """Write one JSONL + one task YAML per task, a manifest (sizes, sha256) and the licence README. The YAMLs
    name their data files by absolute path inside `final_dir` (where `directory` will be moved; default itself)."""
    manifest = {"build_version": BUILD_VERSION, "source": source, "tasks": {}}
    for name, rows in items.items():
        data = directory / f"{name}.jsonl"
        blob = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
        data.write_bytes(blob)
        task = _task_yaml(name, (final_dir or directory) / data.name)
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        manifest["tasks"][name] = {"items": len(rows), "sha256": hashlib.sha256(blob).hexdigest(),
                                   "description": OFFLINE_TASKS[name].description,
                                   "chance": OFFLINE_TASKS[name].chance}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    table = "\n".join(f"- `{n}` ({m['items']} items, chance: {m['chance']}): {m['description']}"
                      for n, m in manifest["tasks"].items())
    (directory / "README.md").write_text(_README.format(n_articles=n_articles, source=source,
                                                        version=BUILD_VERSION, table=table))
    return manifest


def task_dir(corpus: str = "wiki") -> Path:
    """The folder holding the offline tasks (lm-eval include path), built once per corpus and build version."""
    emb = EMBEDDED_CORPORA[corpus]
    eval_path = emb.ensure() / emb.eval_file
    digest = hashlib.sha256(eval_path.read_bytes()).hexdigest()[:12]
    target = cache_home() / "lm_eval_tasks" / f"{corpus}-v{BUILD_VERSION}-{digest}"
    if (target / "manifest.json").exists():
        return target
    articles = emb.eval_articles()
    with staged_dir(target) as tmp:
        write_tasks(tmp, build_items(articles), emb.description, len(articles), final_dir=target)
    return target


def manifest(directory: Path | None = None) -> dict:
    return json.loads(((directory or task_dir()) / "manifest.json").read_text())


def main() -> None:
    d = task_dir()
    print(d)
    for name, m in manifest(d)["tasks"].items():
        print(f"  {name}: {m['items']} items (chance: {m['chance']})")


if __name__ == "__main__":
    main()
