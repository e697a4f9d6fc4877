"""`DistillationTrainingArguments`: `TrainingArguments` plus the distillation knobs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES
from .mapping import LayerMapping


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """Everything `TrainingArguments` has, plus how the student learns from the teacher.

    Total loss: `alpha * L_soft + (1 - alpha) * L_hard + hidden_weight * L_hidden
    + attention_weight * L_attention`.
    """

    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature T > 0 for the soft-target loss (scaled by T^2)."},
    )
    alpha: float = field(
        default=0.5,
        metadata={"help": "Weight in [0, 1] of the soft-target loss; the hard-label loss gets 1 - alpha."},
    )
    hidden_weight: float = field(
        default=0.0,
        metadata={"help": "Weight (>= 0) of the hidden-state loss; 0 turns it off and skips hidden outputs."},
    )
    attention_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight (>= 0) of the attention-map loss; 0 turns it off and skips attention outputs."
        },
    )
    hidden_loss: str = field(
        default="mse",
        metadata={"help": f"Hidden-state loss: one of {HIDDEN_LOSSES.names()}."},
    )
    attention_loss: str = field(
        default="kl",
        metadata={
            "help": f"Attention-map loss: one of {ATTENTION_LOSSES.names()} (mse = TinyBERT, kl = MiniLM)."
        },
    )
    layer_mapping: str = field(
        default="uniform",
        metadata={
            "help": "Which student layer learns from which teacher layer: 'uniform', 'last', or explicit "
            "student:teacher pairs such as '1:2,2:4,3:6' (0 = embedding output)."
        },
    )

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (weight of the soft-target loss), got {self.alpha}.")
        for name in ("hidden_weight", "attention_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (0 turns the loss off), got {getattr(self, name)}.")
        if self.hidden_loss not in HIDDEN_LOSSES.names():
            raise ValueError(f"hidden_loss must be one of {HIDDEN_LOSSES.names()}, got {self.hidden_loss!r}.")
        if self.attention_loss not in ATTENTION_LOSSES.names():
            raise ValueError(
                f"attention_loss must be one of {ATTENTION_LOSSES.names()}, got {self.attention_loss!r}."
            )
        LayerMapping.parse(self.layer_mapping)
        if not self.use_cpu and _launched_multi_process() and not _has_accelerator():
            # Under `accelerate launch --multi_gpu` on a CPU-only machine, accelerate forms a gloo process
            # group only when asked for the CPU; otherwise every rank silently trains alone on all the data.
            self.use_cpu = True
        super().__post_init__()

    @property
    def parsed_layer_mapping(self) -> LayerMapping:
        return LayerMapping.parse(self.layer_mapping)


def _launched_multi_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )
