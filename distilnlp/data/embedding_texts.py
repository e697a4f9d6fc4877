"""Unlabelled text for sentence-embedding distillation, and the BBC News articles its evaluation may use.

    texts = distillation_texts("bbc_news", window_words=(16, 64, 256), max_texts=20_000)

`bbc_news` means the bundled corpus' TRANSFER articles only (`bbc_tasks.article_splits`, 40% of the 2,225, seeded):
the embedding evaluation (`distilnlp.benchmark.embedding_eval`) reads only the other 60% (train + validation +
test),
so no text a student was distilled on is scored. Long documents become windows of several lengths (short ones
look like sentences and headlines, long ones like passages), so the student sees the lengths it will embed.
Any other source is a transfer file or folder (`data.transfer.load_transfer_texts`: .txt / .csv / .json(l) /
.parquet) or a bundled task name (its transfer units).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .bbc_tasks import article_splits, load_bbc_news
from .transfer import load_transfer_texts, window_texts

BBC_TRANSFER_ARTICLES = "bbc_news"
SPLIT_SEED = 42  # the bundled tasks' default split seed: one article split for every task and the evaluation


def bbc_article_parts(
    seed: int = SPLIT_SEED,
) -> tuple[list[str], list[int], list[str], dict[str, np.ndarray]]:
    """(texts, labels, topic names, article indices per split) of the bundled BBC News corpus."""
    corpus = load_bbc_news()
    labels = corpus["label"]
    return corpus["text"], labels, corpus.features["label"].names, article_splits(len(labels), labels, seed)


def _windows(texts: list[str], window_words: Sequence[int]) -> list[str]:
    out = []
    for size in window_words:
        out += window_texts(texts, size)
    return out


def distillation_texts(
    source: str = BBC_TRANSFER_ARTICLES,
    window_words: Sequence[int] = (16, 64, 256),
    max_texts: int | None = None,
    seed: int = 42,
) -> list[str]:
    """Unique texts (windows of every size in `window_words`), shuffled with `seed`, at most `max_texts`."""
    if not window_words or any(int(w) < 1 for w in window_words):
        raise ValueError(f"window_words must be word counts >= 1, got {list(window_words)}.")
    if source == BBC_TRANSFER_ARTICLES:
        texts, _, _, parts = bbc_article_parts()
        documents = [texts[i] for i in parts["transfer"].tolist()]
    else:
        documents = load_transfer_texts(source)["text"]
    units = list(dict.fromkeys(t for t in _windows(documents, window_words) if t.strip()))
    order = np.random.default_rng(seed).permutation(len(units))
    units = [units[i] for i in order]
    if not units:
        raise ValueError(f"The distillation text {source} has no text.")
    return units[:max_texts] if max_texts else units
