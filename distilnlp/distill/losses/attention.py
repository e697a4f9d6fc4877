"""Attention-map losses (TinyBERT MSE, MiniLM KL), padding positions masked out.

Maps are attention probabilities (B, heads, L, L). When the student and the teacher have different head
counts, both are averaged over heads first and compared as one map.
"""

from __future__ import annotations

import torch

from .registry import ATTENTION_LOSSES


def _align_heads(student_attn: torch.Tensor, teacher_attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if student_attn.shape[1] != teacher_attn.shape[1]:
        return student_attn.mean(1, keepdim=True), teacher_attn.mean(1, keepdim=True)
    return student_attn, teacher_attn


def _reduce(total: torch.Tensor, count: torch.Tensor, heads: int, reduction: str) -> torch.Tensor:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    per_head = total / heads
    return per_head if reduction == "sum" else per_head / count.clamp_min(1)


@ATTENTION_LOSSES.register("mse", normalizer="squared_lengths")
def attention_mse_loss(
    student_attn: torch.Tensor,
    teacher_attn: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """TinyBERT: squared error summed over real (query, key) pairs of every head, / sum_b heads * len_b^2.

    Args:
        student_attn, teacher_attn: (B, heads, L, L) attention probabilities.
        attention_mask: (B, L), 1 = real token.
        reduction: `mean` as above, or `sum`: the squared error divided by heads only (the trainer divides
            by sum_b len_b^2 over a whole accumulation window).
    """
    student_attn, teacher_attn = _align_heads(student_attn, teacher_attn)
    batch, heads, length, _ = student_attn.shape
    if attention_mask is None:
        attention_mask = student_attn.new_ones(batch, length)
    mask = attention_mask.float()
    pair_mask = mask[:, None, :, None] * mask[:, None, None, :]
    total = ((student_attn.float() - teacher_attn.float()).pow(2) * pair_mask).sum()
    return _reduce(total, mask.sum(-1).pow(2).sum(), heads, reduction)


@ATTENTION_LOSSES.register("kl", normalizer="tokens")
def attention_kl_loss(
    student_attn: torch.Tensor,
    teacher_attn: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """MiniLM: per (example, head, real query row), sum over real keys of `A_t * log(A_t / A_s)`, averaged.

    Shapes as `attention_mse_loss`; `sum` divides the row total by heads only.
    """
    student_attn, teacher_attn = _align_heads(student_attn, teacher_attn)
    batch, heads, length, _ = student_attn.shape
    if attention_mask is None:
        attention_mask = student_attn.new_ones(batch, length)
    mask = attention_mask.float()
    a_t, a_s = teacher_attn.float(), student_attn.float()
    # xlogy keeps 0 * log 0 = 0; the clamp only matters where fp16 rounds a real probability to zero.
    pointwise = torch.xlogy(a_t, a_t) - a_t * torch.log(a_s.clamp_min(1e-12))
    per_row = (pointwise * mask[:, None, None, :]).sum(-1)  # (B, heads, L)
    total = (per_row * mask[:, None, :]).sum()
    return _reduce(total, mask.sum(), heads, reduction)
