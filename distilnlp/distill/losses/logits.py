"""Soft-target losses between student and teacher logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._reduce import reduce_items


def logit_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hinton soft-target loss `T^2 * KL(softmax(z_t / T) || softmax(z_s / T))` per item.

    Args:
        student_logits, teacher_logits: (B, C) per example, or (B, L, C) per token.
        temperature: T > 0; the T^2 factor keeps gradient scale independent of T.
        mask: (B,) or (B, L), 1 for items that count (real tokens), 0 for padding.
        reduction: `mean` over counted items, or their `sum`.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_item = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(-1)
    return reduce_items(per_item * temperature**2, mask, reduction)


def logit_binary_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-label soft targets: `T^2 * sum_c KL(Bernoulli(sigmoid(t_c/T)) || Bernoulli(sigmoid(s_c/T)))`.

    Shapes as `logit_kl_loss`; every label is an independent yes/no decision, so each gets a binary KL.
    """
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    p_t = torch.sigmoid(t)
    # KL(p_t || p_s) = p_t (log p_t - log p_s) + (1 - p_t)(log(1 - p_t) - log(1 - p_s)), via log-sigmoids.
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return reduce_items(kl.sum(-1) * temperature**2, mask, reduction)


def logit_mse_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Regression soft targets: squared error to the teacher's prediction, averaged over outputs per item.

    `temperature` is accepted for a uniform signature and ignored (there is no distribution to soften).
    """
    per_item = (student_logits.float() - teacher_logits.float()).pow(2).mean(-1)
    return reduce_items(per_item, mask, reduction)


def soft_target_loss_for(problem_type: str | None):
    """The soft-target loss matching a `config.problem_type`."""
    if problem_type == "multi_label_classification":
        return logit_binary_kl_loss
    if problem_type == "regression":
        return logit_mse_loss
    return logit_kl_loss
