"""`StageTrainingArguments`: `TrainingArguments` as every training stage (fine-tune, distill) of distilnlp takes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from transformers import TrainingArguments

# transformers 5 dropped `warmup_ratio` (its `warmup_steps` takes a fraction instead).
_HAS_WARMUP_RATIO = "warmup_ratio" in {f.name for f in fields(TrainingArguments)}


@dataclass
class StageTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the two fields distilnlp's commands and recipes rely on, which transformers 5
    removed: `overwrite_output_dir` (start over instead of resuming) and `warmup_ratio` (translated to
    transformers 5's fractional `warmup_steps`). On transformers 4.57 they are the parent's own fields."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in output_dir instead of resuming from its last checkpoint."},
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "Linear warm-up over this fraction of the training steps, in [0, 1)."}
    )

    def __post_init__(self):
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.warmup_ratio and not _HAS_WARMUP_RATIO:
            # warmup_steps == warmup_ratio: this translation done already (a `dataclasses.replace` copy).
            if self.warmup_steps and self.warmup_steps != self.warmup_ratio:
                raise ValueError("Set warmup_ratio or warmup_steps, not both.")
            self.warmup_steps = self.warmup_ratio  # transformers 5: a float in [0, 1) is a ratio
        if not has_accelerator():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
        super().__post_init__()


def has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )


def list_items(value: str | Sequence[Any] | None) -> list[str]:
    """A list option's items as text: '1,2 3' / ['1,2', 3] -> ['1', '2', '3']; None -> [].

    Flags give a list of words, each of which may hold several comma-separated items; a recipe or Python may
    give one text or a list. The fields' own checks convert and validate the items.
    """
    if value is None:
        return []
    words = [value] if isinstance(value, str) else list(value)
    return [item.strip() for word in words for item in str(word).split(",") if item.strip()]
