"""Several teachers: soft targets from the weighted mean of their probabilities (Hinton et al.'s ensemble).

With teachers i = 1..K, weights w_i (sum 1) and temperature T, the soft targets are p = sum_i w_i softmax(z_i/T)
and the soft loss T^2 * KL(p || softmax(z_s/T)). `mix_teacher_logits` returns logits z with softmax(z/T) = p
exactly, so every soft-target loss of `distilnlp.distill.losses` is used unchanged. The mixture depends on T, so it is
formed at every step from each teacher's own logits (never from one set of mixed logits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

# The cache records a teacher's class names too, so their definition sits below both, with the task's.
from ..data.task import label_names_of

logger = logging.getLogger(__name__)


def as_teacher_list(teacher_model) -> list:
    """`teacher_model` as a list: [] for None, [model] for one model, the models of a list or tuple."""
    if teacher_model is None:
        return []
    if isinstance(teacher_model, (list, tuple)):
        if not teacher_model:
            raise ValueError("teacher_model is an empty list: give at least one teacher.")
        return list(teacher_model)
    return [teacher_model]


def parse_teacher_weights(spec: str | Sequence[float] | None) -> list[float] | None:
    """'0.5,0.3,0.2' or [0.5, 0.3, 0.2] -> floats (each finite and > 0); None -> None (equal weights)."""
    if spec is None:
        return None
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    shown = ",".join(str(part).strip() for part in parts)
    try:
        weights = [float(part) for part in parts]
    except (TypeError, ValueError):
        raise ValueError(
            f"teacher_weights={shown!r}: give one number per teacher, comma-separated, such as '0.5,0.5'."
        ) from None
    if not weights or not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"teacher_weights={shown!r}: every weight must be a finite number > 0.")
    return weights


def teacher_weight_tensor(spec: str | Sequence[float] | None, count: int) -> torch.Tensor:
    """The normalised mixing weights (K,); equal when `spec` is None."""
    weights = parse_teacher_weights(spec)
    if weights is None:
        weights = [1.0] * count
    if len(weights) != count:
        raise ValueError(
            f"teacher_weights has {len(weights)} value(s) but there are {count} teacher(s): give one per teacher."
        )
    tensor = torch.tensor(weights, dtype=torch.float64)
    return tensor / tensor.sum()


def feature_teacher_of(teachers: list, index: int):
    """The teacher whose features (hidden states, attention maps, relations) the student learns; None if none."""
    if not teachers:
        return None
    if not 0 <= index < len(teachers):
        raise ValueError(
            f"feature_teacher={index} but there are {len(teachers)} teacher(s): use 0..{len(teachers) - 1}."
        )
    return teachers[index]


def _generic(names: Sequence[str]) -> bool:
    """transformers' placeholder names (LABEL_0, LABEL_1, ...): the classes have no names to match."""
    return all(name == f"LABEL_{i}" for i, name in enumerate(names))


def label_permutation(
    teacher, task_label_names: Sequence[str], role: str = "The teacher"
) -> list[int] | None:
    """How a teacher's logits line up with the task's classes, matched by class name.

    `teacher` is a model config or the teacher's class names in id order. Returns None when the orders
    already agree or either side has only placeholder names (`LABEL_i`, matched by index, so the counts must
    agree), else `order` with `logits[..., order]` in the task's order. Other class names are a `ValueError`.
    """
    names = list(teacher) if isinstance(teacher, (list, tuple)) else label_names_of(teacher)
    task = [str(name) for name in task_label_names]
    if names == task or (len(names) == len(task) and (_generic(names) or _generic(task))):
        return None
    if sorted(names) != sorted(task) or len(set(names)) != len(names):
        raise ValueError(
            f"{role} predicts the classes {names} but the task has {task}: distill from a teacher fine-tuned "
            "on the task's labels."
        )
    return [names.index(name) for name in task]


def align_logits(logits: torch.Tensor, order: list[int] | None) -> torch.Tensor:
    """Teacher logits (..., C) reordered into the task's class order (`label_permutation`)."""
    return logits if order is None else logits[..., order]


def teacher_label_orders(teachers: list, cache_info: dict | None, task_label_names: Sequence[str]) -> tuple:
    """(orders of the live teachers' logits, orders of the cached logits) into the task's class order.

    Caches hold each teacher's logits in its own order with its class names recorded; a cache without
    names (older) is taken to be in the live teachers' order, or the task's when there are none.
    """
    live = [label_permutation(t.config, task_label_names, f"Teacher {i}") for i, t in enumerate(teachers)]
    summary = (cache_info or {}).get("teacher") or {}
    recorded = [s.get("label_names") for s in summary.get("ensemble", [summary])]
    cached = live or [None] * len(recorded)
    if cache_info is not None and all(recorded):
        cached = [
            label_permutation(names, task_label_names, f"Cached teacher {i}")
            for i, names in enumerate(recorded)
        ]
    for i, order in enumerate(live or cached):
        if order is not None:
            logger.info(
                f"Teacher {i} lists the task's classes in another order; its logits are reordered by name into "
                f"the task's order {list(task_label_names)}."
            )
    return live, cached


def check_teachers(student: PreTrainedModel, teachers: list) -> None:
    """Every teacher must read the student's token ids and predict its labels."""
    for index, teacher in enumerate(teachers):
        if teacher.config.vocab_size != student.config.vocab_size:
            raise ValueError(
                f"Teacher {index} has a vocabulary of {teacher.config.vocab_size} tokens and the student "
                f"{student.config.vocab_size}: every teacher must use the student's tokenizer."
            )
        if teacher.config.num_labels != student.config.num_labels:
            raise ValueError(
                f"Teacher {index} predicts {teacher.config.num_labels} labels and the student "
                f"{student.config.num_labels}: every teacher must be fine-tuned on the same labels."
            )


def mix_teacher_logits(
    logits: Sequence[torch.Tensor], weights: torch.Tensor, temperature: float, problem_type: str | None
) -> torch.Tensor:
    """Logits whose soft targets at `temperature` are the weighted mean of the teachers' soft targets.

    Args:
        logits: K tensors (B, C) or (B, L, C), one per teacher.
        weights: (K,) mixing weights summing to 1.
        temperature: T > 0 of the soft-target loss the result feeds.
        problem_type: the student's `config.problem_type` (None / single-label: softmax over classes).

    Returns:
        Float32 logits z of that shape: single-label `T * log sum_i w_i softmax(z_i / T)` (so
        softmax(z / T) is the mixture, as its probabilities sum to 1); multi-label `T * logit(sum_i w_i
        sigmoid(z_i / T))` per label; regression the weighted mean `sum_i w_i z_i`.
    """
    stacked = torch.stack([z.float() for z in logits])  # (K, ..., C)
    w = weights.to(stacked).view(-1, *([1] * (stacked.dim() - 1)))
    if problem_type == "regression":
        return (w * stacked).sum(0)
    scaled = stacked / temperature
    if problem_type == "multi_label_classification":
        # log p and log(1 - p) of the mixed Bernoulli, each by a log-sum-exp (no 0 * log 0 or log of 0).
        log_p = torch.logsumexp(w.log() + F.logsigmoid(scaled), 0)
        log_not_p = torch.logsumexp(w.log() + F.logsigmoid(-scaled), 0)
        return temperature * (log_p - log_not_p)
    return temperature * torch.logsumexp(w.log() + F.log_softmax(scaled, -1), 0)


def split_cached_logits(cached: torch.Tensor, count: int) -> list[torch.Tensor]:
    """A cache row of K teachers' logits, (B, K * C) teacher by teacher, as K tensors (B, C)."""
    if cached.shape[-1] % count:
        raise ValueError(
            f"The cached teacher logits have {cached.shape[-1]} values per example, not a multiple of the "
            f"{count} teachers: the cache was built for other teachers; rebuild it."
        )
    return list(cached.unflatten(-1, (count, -1)).unbind(-2))
