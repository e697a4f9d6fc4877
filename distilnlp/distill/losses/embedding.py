"""Sentence-embedding losses: the student's embedding against the teacher's, and the in-batch similarity ranking.

Each returns the sum over examples (`reduction="sum"`) or their mean; the trainer divides the sums by the number
of examples in the whole accumulation window, so accumulation gives the gradients of one large batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._reduce import reduce_items


def embedding_mse_loss(student: torch.Tensor, teacher: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error per example, averaged over the D dimensions (sentence-transformers' MSELoss per row).

    Args:
        student: (B, D) student embeddings (after any projection to the teacher's width).
        teacher: (B, D) teacher embeddings.
    Returns: scalar; "sum": the sum over the B examples of mean_d (s - t)^2.
    """
    return reduce_items((student - teacher.to(student.dtype)).pow(2).mean(-1), None, reduction)


def embedding_cosine_loss(
    student: torch.Tensor, teacher: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """1 - cos(s_i, t_i) per example (direction only: what cosine-similarity search reads).

    Args:
        student, teacher: (B, D).
    Returns: scalar; "sum": the sum over the B examples.
    """
    cosine = F.cosine_similarity(student, teacher.to(student.dtype), dim=-1, eps=1e-8)
    return reduce_items(1 - cosine, None, reduction)


def similarity_log_probs(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row-wise log-softmax of the in-batch cosine similarities / temperature, self-pairs left out.

    Args:
        embeddings: (B, D), B >= 2.
    Returns: (B, B) log-probabilities; the diagonal is -inf (probability 0) and every row sums to 1 over
    the other B - 1 examples.
    """
    unit = F.normalize(embeddings, dim=-1, eps=1e-8)
    scores = unit @ unit.T / temperature
    eye = torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    return scores.masked_fill(eye, float("-inf")).log_softmax(-1)


def similarity_kl_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.05, reduction: str = "mean"
) -> torch.Tensor:
    """In-batch similarity-matrix KL: the student ranks the other examples of the batch as the teacher does.

    For each example i, P_t(i, .) = softmax_j(cos(t_i, t_j) / T) over the batch's other examples (j != i), P_s
    likewise from the student; the loss of row i is KL(P_t(i) || P_s(i)) = sum_{j != i} P_t log(P_t / P_s).
    Student and teacher widths may differ (only each side's own similarities are compared). A batch of one
    example has no other example to rank: the loss is 0.

    Args:
        student: (B, D_s); teacher: (B, D_t).
        temperature: T > 0; small T weights the nearest neighbours (0.05, as in contrastive training).
    Returns: scalar; "sum": the sum over the B rows.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if len(student) < 2:
        return student.sum() * 0
    log_p_s = similarity_log_probs(student, temperature)
    log_p_t = similarity_log_probs(teacher.to(student.dtype), temperature)
    eye = torch.eye(len(student), dtype=torch.bool, device=student.device)
    terms = (log_p_t.exp() * (log_p_t - log_p_s)).masked_fill(eye, 0.0)  # -inf - -inf on the diagonal
    return reduce_items(terms.sum(-1), None, reduction)
