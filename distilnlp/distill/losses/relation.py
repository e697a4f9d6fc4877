"""Self-attention relation losses (MiniLMv2): no projections, so widths and head counts may differ.

A layer's queries (or keys, or values) Q, (B, L, H), are split into A relation heads of size d = H / A; per
head, R = softmax(Q_a Q_a^T / sqrt(d)) over the real keys, (B, A, L, L). Student and teacher matrices are
L x L whatever their widths, as long as both widths are divisible by A.
"""

from __future__ import annotations

import math

import torch

from ._reduce import reduce_items
from .registry import RELATION_LOSSES


def relation_log_probs(
    vectors: torch.Tensor, relation_heads: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Log of the relation matrices `softmax(X_a X_a^T / sqrt(d))` over real keys.

    Args:
        vectors: (B, L, H) queries, keys or values of one layer (the linear projections' outputs).
        relation_heads: A, which must divide H; d = H / A.
        attention_mask: (B, L), 1 = real token; padding keys get probability 0.

    Returns:
        (B, A, L, L) float32 log-probabilities (rows of padding queries are meaningless; mask them).
    """
    batch, length, width = vectors.shape
    if width % relation_heads:
        raise ValueError(f"relation_heads={relation_heads} must divide the width {width} of the vectors.")
    size = width // relation_heads
    x = vectors.float().view(batch, length, relation_heads, size).transpose(1, 2)  # (B, A, L, d)
    scores = x @ x.transpose(-1, -2) / math.sqrt(size)
    if attention_mask is not None:
        # A finite minimum (not -inf) keeps rows finite even where every key is padding.
        keys = attention_mask[:, None, None, :].bool()
        scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
    return torch.log_softmax(scores, dim=-1)


@RELATION_LOSSES.register("kl", normalizer="tokens")
def relation_kl_loss(
    student_vectors: torch.Tensor,
    teacher_vectors: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    relation_heads: int = 12,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL(R_t || R_s) per (example, relation head, real query row), summed over real keys.

    Args:
        student_vectors: (B, L, H_s) student queries / keys / values of one layer.
        teacher_vectors: (B, L, H_t) the teacher's of the same kind; H_s and H_t may differ.
        attention_mask: (B, L), 1 = real token.
        relation_heads: A, dividing both H_s and H_t.
        reduction: `mean` over real query rows (each row's KL averaged over the A heads), or the `sum`
            over real query rows of that head average (the trainer divides by the window's real tokens).
    """
    log_s = relation_log_probs(student_vectors, relation_heads, attention_mask)
    log_t = relation_log_probs(teacher_vectors, relation_heads, attention_mask)
    pointwise = log_t.exp() * (log_t - log_s)  # (B, A, L, L)
    if attention_mask is not None:
        pointwise = pointwise.masked_fill(~attention_mask[:, None, None, :].bool(), 0.0)
    per_row = pointwise.sum(-1).mean(1)  # (B, L): summed over keys, averaged over relation heads
    return reduce_items(per_row, attention_mask, reduction)
