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
