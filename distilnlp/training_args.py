"""`DistillationTrainingArguments`: `TrainingArguments` plus the distillation knobs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from .layers import LayerMapping
from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES
from .schedules import SCHEDULES, schedule_value

TEACHER_CACHE_BACKENDS = ("torch", "onnx", "onnx-int8")
# The four scheduled settings, with the range check each start and end value must pass.
_SCHEDULED = {
    "temperature": ("> 0", lambda v: v > 0),
    "alpha": ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    "hidden_weight": (">= 0", lambda v: v >= 0),
    "attention_weight": (">= 0", lambda v: v >= 0),
}


@dataclass(frozen=True)
class LossSettings:
    """Temperature and loss weights in force at one training step (after schedules)."""

    temperature: float
    alpha: float
    hidden_weight: float
    attention_weight: float


def _schedule_help(name: str) -> str:
    return (
        f"How {name} moves from its start value to {name}_end over training (progress = global_step / "
        f"max_steps): one of {', '.join(SCHEDULES)}."
    )


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """Everything `TrainingArguments` has, plus how the student learns from the teacher.

    Total loss: `alpha * L_soft + (1 - alpha) * L_hard + hidden_weight * L_hidden
    + attention_weight * L_attention`. Temperature and each weight may follow a schedule from their value
    to `<name>_end` (`loss_settings(progress)` gives the values in force).
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
    temperature_schedule: str = field(default="constant", metadata={"help": _schedule_help("temperature")})
    temperature_end: float | None = field(
        default=None, metadata={"help": "Final temperature (> 0) of a linear or cosine temperature_schedule."}
    )
    alpha_schedule: str = field(default="constant", metadata={"help": _schedule_help("alpha")})
    alpha_end: float | None = field(
        default=None, metadata={"help": "Final alpha (in [0, 1]) of a linear or cosine alpha_schedule."}
    )
    hidden_weight_schedule: str = field(
        default="constant", metadata={"help": _schedule_help("hidden_weight")}
    )
    hidden_weight_end: float | None = field(
        default=None,
        metadata={"help": "Final hidden_weight (>= 0) of a linear or cosine hidden_weight_schedule."},
    )
    attention_weight_schedule: str = field(
        default="constant", metadata={"help": _schedule_help("attention_weight")}
    )
    attention_weight_end: float | None = field(
        default=None,
        metadata={"help": "Final attention_weight (>= 0) of a linear or cosine attention_weight_schedule."},
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder of precomputed teacher logits (see `distilnlp cache-teacher`). Built here when "
            "missing, rejected when it does not match the teacher, tokenizer or data. With hidden_weight = "
            "attention_weight = 0 the teacher is then never run."
        },
    )
    teacher_cache_backend: str = field(
        default="torch",
        metadata={
            "help": f"How a missing teacher_cache is built: one of {', '.join(TEACHER_CACHE_BACKENDS)} "
            "(onnx = fp32 ONNX Runtime; onnx-int8 = dynamic int8 with fp32 re-runs of low-margin examples)."
        },
    )
    teacher_cache_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Store only the teacher's k largest logits per example (single-label classification); "
            "the soft targets are then renormalised over those k classes. Unset: all logits."
        },
    )
    teacher_cache_batch_size: int = field(
        default=64, metadata={"help": "Batch size of the teacher when a missing teacher_cache is built."}
    )
    quantization_aware: bool = field(
        default=False,
        metadata={
            "help": "Distill with int8 fake quantization of the student's Linear layers (per-channel weights, "
            "dynamic per-tensor inputs) and embeddings, as ONNX Runtime's dynamic int8 graph computes; "
            "`distilnlp export` then builds that graph and checks it against the fake-quantized student."
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
        self.validate_distillation()
        if not self.use_cpu and _launched_multi_process() and not _has_accelerator():
            # Under `accelerate launch --multi_gpu` on a CPU-only machine, accelerate forms a gloo process
            # group only when asked for the CPU; otherwise every rank silently trains alone on all the data.
            self.use_cpu = True
        super().__post_init__()

    def validate_distillation(self) -> None:
        """Check every distillation field (also re-run after a hyper-parameter search sets new values)."""
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (weight of the soft-target loss), got {self.alpha}.")
        for name in ("hidden_weight", "attention_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (0 turns the loss off), got {getattr(self, name)}.")
        for name, (allowed, ok) in _SCHEDULED.items():
            kind, end = getattr(self, f"{name}_schedule"), getattr(self, f"{name}_end")
            if kind not in SCHEDULES:
                raise ValueError(f"{name}_schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}.")
            if kind == "constant" and end is not None:
                raise ValueError(
                    f"{name}_end={end} is set but {name}_schedule is 'constant'; set {name}_schedule to "
                    f"'linear' or 'cosine', or drop {name}_end."
                )
            if kind != "constant" and end is None:
                raise ValueError(f"{name}_schedule={kind!r} needs {name}_end, the value to reach at the end.")
            if end is not None and not ok(end):
                raise ValueError(f"{name}_end must be {allowed}, got {end}.")
        if self.teacher_cache_backend not in TEACHER_CACHE_BACKENDS:
            raise ValueError(
                f"teacher_cache_backend must be one of {', '.join(TEACHER_CACHE_BACKENDS)}, "
                f"got {self.teacher_cache_backend!r}."
            )
        if self.teacher_cache_top_k is not None and self.teacher_cache_top_k < 1:
            raise ValueError(
                f"teacher_cache_top_k must be >= 1 or unset (all logits), got {self.teacher_cache_top_k}."
            )
        if self.teacher_cache_batch_size < 1:
            raise ValueError(f"teacher_cache_batch_size must be >= 1, got {self.teacher_cache_batch_size}.")
        if self.hidden_loss not in HIDDEN_LOSSES.names():
            raise ValueError(f"hidden_loss must be one of {HIDDEN_LOSSES.names()}, got {self.hidden_loss!r}.")
        if self.attention_loss not in ATTENTION_LOSSES.names():
            raise ValueError(
                f"attention_loss must be one of {ATTENTION_LOSSES.names()}, got {self.attention_loss!r}."
            )
        LayerMapping.parse(self.layer_mapping)

    @property
    def parsed_layer_mapping(self) -> LayerMapping:
        return LayerMapping.parse(self.layer_mapping)

    def loss_settings(self, progress: float) -> LossSettings:
        """Temperature and weights at `progress` = global_step / max_steps in [0, 1]."""
        return LossSettings(
            **{
                name: schedule_value(
                    getattr(self, f"{name}_schedule"),
                    getattr(self, name),
                    getattr(self, f"{name}_end"),
                    progress,
                )
                for name in _SCHEDULED
            }
        )

    def max_weight(self, name: str) -> float:
        """The largest value `name` ("hidden_weight" / "attention_weight") takes during training."""
        end = getattr(self, f"{name}_end")
        return max(getattr(self, name), end if end is not None else 0.0)

    @property
    def scheduled(self) -> tuple[str, ...]:
        """Names of the settings that follow a non-constant schedule."""
        return tuple(name for name in _SCHEDULED if getattr(self, f"{name}_schedule") != "constant")


def _launched_multi_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )
