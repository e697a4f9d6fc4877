"""Classification metrics as `evaluate` modules that need no Hub access.

`evaluate.load("accuracy")` fetches a metric script from the Hub, which is unreachable offline; these
`evaluate.Metric` subclasses give the same results (they call scikit-learn like the Hub scripts) and keep
`evaluate`'s batching (`add_batch`) and distributed gathering.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy", citation="", inputs_description="", features=_FEATURES
        )

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}


class MacroF1(evaluate.Metric):
    """F1 averaged over classes with equal weight (macro-F1)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Macro F1", citation="", inputs_description="", features=_FEATURES
        )

    def _compute(self, predictions, references):
        return {"f1": float(f1_score(references, predictions, average="macro"))}


def classification_scores(predictions, references) -> dict[str, float]:
    """Accuracy and macro-F1 of integer `predictions` against `references` (both shape (N,))."""
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    scores = Accuracy().compute(predictions=predictions, references=references)
    scores.update(MacroF1().compute(predictions=predictions, references=references))
    return scores


def compute_classification_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for `Trainer`: logits (N, C) -> accuracy and macro-F1 of the argmax."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return classification_scores(np.argmax(logits, axis=-1), labels)


def entity_scores(predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    """Entity-level precision / recall / F1 (seqeval, CoNLL evaluation: an entity counts when its type and
    span both match) and token accuracy of IOB tag sequences, one list per sentence.

    seqeval is called directly: `evaluate.load("seqeval")` fetches its script from the Hub (fails offline).
    """
    from seqeval.metrics import accuracy_score as tag_accuracy
    from seqeval.metrics import f1_score as entity_f1
    from seqeval.metrics import precision_score, recall_score

    return {
        "precision": float(precision_score(references, predictions, zero_division=0)),
        "recall": float(recall_score(references, predictions, zero_division=0)),
        "f1": float(entity_f1(references, predictions, zero_division=0)),
        "accuracy": float(tag_accuracy(references, predictions)),
    }


def token_metrics(label_names: list[str]):
    """`compute_metrics` for a token classifier's `Trainer`: logits (N, L, C) and labels (N, L) (-100 where no
    word starts) -> entity precision / recall / F1 and accuracy over the labelled positions."""

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predictions, references = [], []
        for row_logits, row_labels in zip(logits, labels, strict=True):
            keep = row_labels != -100
            predictions.append([label_names[i] for i in row_logits[keep].argmax(-1)])
            references.append([label_names[i] for i in row_labels[keep]])
        return entity_scores(predictions, references)

    return compute
