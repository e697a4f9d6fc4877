"""How many items a batch holds, for each way the losses normalise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..runs.artifacts import TEACHER_LOGITS_COLUMN as CACHED_LOGITS


@dataclass
class ItemCounts:
    """Counts over one micro-batch, or summed over an accumulation window and all processes.

    examples: sequences; tokens: real (non-padding) tokens; squared_lengths: sum of len^2 (attention
    pairs); labels: label entries != -100 (what the model's own loss averages over); soft_targets: rows
    whose cached teacher logits are finite (all rows without a cache; a soft-label file leaves the rows it
    does not cover NaN).
    """

    examples: torch.Tensor
    tokens: torch.Tensor
    squared_lengths: torch.Tensor
    labels: torch.Tensor
    soft_targets: torch.Tensor

    @classmethod
    def of_batch(cls, inputs: dict) -> ItemCounts:
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(inputs["input_ids"])
        lengths = mask.sum(-1).double()
        labels = inputs.get("labels")
        label_count = labels.ne(-100).sum().double() if labels is not None else lengths.new_zeros(())
        examples = lengths.new_tensor(float(len(lengths)))
        cached = inputs.get(CACHED_LOGITS)
        soft = torch.isfinite(cached).all(-1).sum().double() if cached is not None else examples
        return cls(examples, lengths.sum(), lengths.pow(2).sum(), label_count, soft)

    def as_tensor(self) -> torch.Tensor:
        return torch.stack([self.examples, self.tokens, self.squared_lengths, self.labels, self.soft_targets])

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> ItemCounts:
        return cls(*values.unbind())

    @classmethod
    def total(cls, batches: list[dict]) -> ItemCounts:
        return cls.from_tensor(torch.stack([cls.of_batch(b).as_tensor() for b in batches]).sum(0))

    def __getitem__(self, normalizer: str) -> torch.Tensor:
        return getattr(self, normalizer).clamp_min(1)
