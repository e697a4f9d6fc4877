from __future__ import annotations

import torch


def reduce_items(values: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Sum or average per-item losses `values` (any shape) over the items where `mask` (same shape) is 1."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if mask is None:
        return values.sum() if reduction == "sum" else values.mean()
    mask = mask.to(values.dtype)
    total = (values * mask).sum()
    return total if reduction == "sum" else total / mask.sum().clamp_min(1)
