"""Hidden-state losses (TinyBERT / BERT-PKD / DistilBERT), padding masked out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._reduce import reduce_items
from .registry import HIDDEN_LOSSES


@HIDDEN_LOSSES.register("mse", normalizer="tokens")
def hidden_mse_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Squared error summed over real tokens and hidden units, divided by (real tokens * hidden size).

    Args:
        student_hidden, teacher_hidden: (B, L, H); project the student first if widths differ.
        attention_mask: (B, L), 1 = real token.
        reduction: `mean` as above, or `sum` over real tokens of (squared error / H).
    """
    per_token = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(-1)
    return reduce_items(per_token, attention_mask, reduction)


@HIDDEN_LOSSES.register("cosine", normalizer="tokens")
def hidden_cosine_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean over real tokens of `1 - cos(h_s, h_t)`; shapes as `hidden_mse_loss`."""
    per_token = 1 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return reduce_items(per_token, attention_mask, reduction)
