"""Offline sentence-embedding evaluation on the bundled BBC News corpus (MTEB-style tasks, no downloads).

    data = EvaluationData.load(max_sentences=(4000, 2000))
    embeddings = embed_all(model.encode, data)         # any callable: list[str] -> (N, D) array
    scores = score_embeddings(embeddings, data, teacher_embeddings)

Every task reads only the articles in no transfer split (`data.embedding_texts.bbc_article_parts`: 1,336 of
the 2,225; the distillation text `bbc_news` is the other 889), so no scored text was distilled on:

    bbc_topic        logistic regression on article-body embeddings: fit on the train + validation articles
                     (1,002), accuracy on the test articles (334)
    bbc_sentences    logistic regression on sentence embeddings (`bbc_news_sentences`, split by article):
                     fit on `max_sentences[0]` training sentences, accuracy on `max_sentences[1]` test sentences
    bbc_clustering   k-means (k = 5 topics, 10 restarts) of the 1,336 article bodies: V-measure
    bbc_retrieval    the headline (an article's first line) as the query, the bodies of all 1,336 articles as
                     the documents, cosine ranking: MRR@10 (the task's score) and recall@1
    teacher_cosine   mean cosine between the model's and the teacher's embeddings of every text above (not in
                     the average: it measures imitation, not quality)

`average` is the mean of the four task scores (accuracy, accuracy, V-measure, MRR@10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TASKS = ("bbc_topic", "bbc_sentences", "bbc_clustering", "bbc_retrieval")
TEXT_SETS = ("bodies", "headlines", "sentences_train", "sentences_test")


@dataclass
class EvaluationData:
    """The texts and labels of the tasks. `split` marks each body's article "fit" (train + validation) or
    "test"."""

    bodies: list[str]
    headlines: list[str]
    body_labels: np.ndarray
    body_split: np.ndarray
    sentences_train: list[str]
    sentences_train_labels: np.ndarray
    sentences_test: list[str]
    sentences_test_labels: np.ndarray

    @classmethod
    def load(cls, max_sentences: tuple[int, int] = (4000, 2000), seed: int = 0) -> EvaluationData:
        from ..data.bbc_tasks import BBC_NEWS_SENTENCES, load_bbc_task
        from ..data.embedding_texts import bbc_article_parts

        texts, labels, _, parts = bbc_article_parts()
        articles = np.sort(np.concatenate([parts["train"], parts["validation"], parts["test"]]))
        test = set(parts["test"].tolist())
        headlines, bodies = zip(*(_headline_and_body(texts[i]) for i in articles.tolist()), strict=True)
        sentences = load_bbc_task(BBC_NEWS_SENTENCES)
        rng = np.random.default_rng(seed)
        picked = {}
        for split, cap in zip(("train", "test"), max_sentences, strict=True):
            rows = sentences[split]
            keep = np.sort(rng.permutation(len(rows))[: min(cap, len(rows))])
            picked[split] = rows.select(keep)
        return cls(
            bodies=list(bodies),
            headlines=list(headlines),
            body_labels=np.asarray([labels[i] for i in articles.tolist()]),
            body_split=np.asarray(["test" if i in test else "fit" for i in articles.tolist()]),
            sentences_train=picked["train"]["text"],
            sentences_train_labels=np.asarray(picked["train"]["label"]),
            sentences_test=picked["test"]["text"],
            sentences_test_labels=np.asarray(picked["test"]["label"]),
        )

    def sizes(self) -> dict[str, int]:
        fit = int((self.body_split == "fit").sum())
        return {
            "articles": len(self.bodies),
            "topic_fit": fit,
            "topic_test": len(self.bodies) - fit,
            "sentences_fit": len(self.sentences_train),
            "sentences_test": len(self.sentences_test),
        }


def _headline_and_body(article: str) -> tuple[str, str]:
    headline, _, body = article.strip().partition("\n")
    return headline.strip(), body.strip() or headline.strip()


def embed_all(encode: Callable[[list[str]], np.ndarray], data: EvaluationData) -> dict[str, np.ndarray]:
    """{text set: (N, D) float32 embeddings} of every text the tasks read."""
    return {name: np.asarray(encode(list(getattr(data, name))), dtype=np.float32) for name in TEXT_SETS}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def classification_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Accuracy of a logistic regression (L2, C=1, up to 1000 iterations) on unit-normalised embeddings."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=1000)
    classifier.fit(_unit(train_x), train_y)
    return float((classifier.predict(_unit(test_x)) == test_y).mean())


def clustering_v_measure(x: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(_unit(x))
    return float(v_measure_score(labels, clusters))


def retrieval_scores(queries: np.ndarray, documents: np.ndarray, k: int = 10) -> dict[str, float]:
    """Query i's relevant document is document i. Cosine ranking; MRR@k (0 beyond rank k) and recall@1."""
    similarity = _unit(queries) @ _unit(documents).T
    own = similarity[np.arange(len(similarity)), np.arange(len(similarity))]
    rank = 1 + (similarity > own[:, None]).sum(1)  # ties counted in the query's favour
    return {
        "mrr_at_10": float(np.where(rank <= k, 1.0 / rank, 0.0).mean()),
        "recall_at_1": float((rank == 1).mean()),
    }


def score_embeddings(
    embeddings: dict[str, np.ndarray], data: EvaluationData, teacher: dict[str, np.ndarray] | None = None
) -> dict:
    """Each task's score, their average, and (with the teacher's embeddings of the same texts) teacher_cosine."""
    fit = data.body_split == "fit"
    bodies = embeddings["bodies"]
    retrieval = retrieval_scores(embeddings["headlines"], bodies)
    scores = {
        "bbc_topic": classification_accuracy(
            bodies[fit], data.body_labels[fit], bodies[~fit], data.body_labels[~fit]
        ),
        "bbc_sentences": classification_accuracy(
            embeddings["sentences_train"],
            data.sentences_train_labels,
            embeddings["sentences_test"],
            data.sentences_test_labels,
        ),
        "bbc_clustering": clustering_v_measure(bodies, data.body_labels, len(np.unique(data.body_labels))),
        "bbc_retrieval": retrieval["mrr_at_10"],
        "bbc_retrieval_recall_at_1": retrieval["recall_at_1"],
    }
    scores["average"] = float(np.mean([scores[t] for t in TASKS]))
    if teacher is not None:
        cosines = [_cosines(embeddings[name], teacher[name]) for name in TEXT_SETS]
        scores["teacher_cosine"] = float(np.concatenate(cosines).mean())
    return scores


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape:  # another embedding space (e.g. model2vec's width): no imitation to measure
        return np.full(len(a), np.nan)
    return (_unit(a) * _unit(b)).sum(1)


def markdown_table(rows: dict[str, dict], teacher: str | None = None) -> str:
    """One row per model: each task, the average, the share of `teacher`'s average, teacher cosine."""
    head = ["model", *TASKS, "R@1", "average", "kept", "cos(teacher)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows[teacher]["average"] if teacher in rows else None
    for name, s in rows.items():
        kept = f"{s['average'] / base:.1%}" if base else ""
        cos = (
            f"{s['teacher_cosine']:.3f}"
            if s.get("teacher_cosine") == s.get("teacher_cosine") and "teacher_cosine" in s
            else ""
        )
        cells = [
            name,
            *(f"{s[t]:.4f}" for t in TASKS),
            f"{s['bbc_retrieval_recall_at_1']:.4f}",
            f"{s['average']:.4f}",
            kept,
            cos,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
