"""`DistillationTrainingArguments`: `TrainingArguments` plus the distillation knobs."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from ..runs.artifacts import TEACHER_CACHE_BACKENDS
from .augment import AUGMENTATIONS
from .layers import LayerMapping
from .losses import ATTENTION_LOSSES, HIDDEN_LOSSES
from .relations import RELATION_TYPES
from .schedules import SCHEDULES, schedule_value
from .stage_arguments import StageTrainingArguments, has_accelerator, list_items
from .teachers import parse_teacher_weights

# Weights of the feature losses (0 turns one off).
FEATURE_WEIGHTS = ("hidden_weight", "attention_weight", "relation_weight")
# Weights of the losses that need the teacher (soft targets, features): all 0 = plain fine-tuning.
TEACHER_WEIGHTS = ("alpha", *FEATURE_WEIGHTS)
# The scheduled settings (LossSettings' fields), with the range check each start and end value must pass.
_SCHEDULED = {
    "temperature": ("> 0", lambda v: v > 0),
    "alpha": ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    **{name: (">= 0", lambda v: v >= 0) for name in FEATURE_WEIGHTS},
}
# Fields of DistillationTrainingArguments that are not settings of the run: they say how to resume it, not
# what it trains, so they are neither recorded nor compared on resume (see `distillation_fields`).
NOT_SETTINGS = frozenset({"allow_changed_settings"})


@dataclass(frozen=True)
class LossSettings:
    """Temperature and loss weights in force at one training step (after schedules)."""

    temperature: float
    alpha: float
    hidden_weight: float
    attention_weight: float
    relation_weight: float = 0.0


def _schedule_help(name: str) -> str:
    return (
        f"How {name} moves from its start value to {name}_end over training (progress = global_step / "
        f"max_steps): one of {', '.join(SCHEDULES)}."
    )


@dataclass
class DistillationTrainingArguments(StageTrainingArguments):
    """Everything `TrainingArguments` has, plus how the student learns from the teacher.

    Total loss: `alpha * L_soft + (1 - alpha) * L_hard + hidden_weight * L_hidden
    + attention_weight * L_attention + relation_weight * L_relation`. Temperature and each weight may follow a schedule from their value
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
    relation_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight (>= 0) of the MiniLMv2 self-attention relation loss (KL between softmax(Q Q^T / "
            "sqrt(d)) of student and teacher, likewise K-K and V-V); 0 turns it off and adds no hooks."
        },
    )
    relation_weight_schedule: str = field(
        default="constant", metadata={"help": _schedule_help("relation_weight")}
    )
    relation_weight_end: float | None = field(
        default=None,
        metadata={"help": "Final relation_weight (>= 0) of a linear or cosine relation_weight_schedule."},
    )
    relation_heads: int | None = field(
        default=None,
        metadata={
            "help": "Relation heads A: Q/K/V are split into A parts of size width / A, so A must divide "
            "both models' widths (which may differ). Unset: the student's attention-head count."
        },
    )
    relation_types: list[str] = field(
        default_factory=lambda: ["q", "k", "v"],
        metadata={
            "help": "Relations to distill: a subset of q, k, v (Q-Q, K-K, V-V), comma-separated or space-separated."
        },
    )
    relation_layers: list[str] = field(
        default_factory=lambda: ["last"],
        metadata={
            "help": "Which student layer's relations learn from which teacher layer's: 'last' (MiniLMv2), "
            "'uniform', or student:teacher pairs such as 2:5 (encoder layers, counted from 1), comma-separated "
            "or space-separated."
        },
    )
    teacher_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "With several teachers: weights > 0, one per teacher, comma-separated or space-separated "
            "(normalised to sum 1); soft targets = sum_i w_i softmax(z_i / T). Unset: equal weights."
        },
    )
    feature_teacher: int = field(
        default=0,
        metadata={
            "help": "With several teachers: the index (from 0) of the one whose hidden states, attention maps "
            "and relations teach the student (and whose layers build it)."
        },
    )
    augmentation: str = field(
        default="none",
        metadata={
            "help": "Consistent augmentation (function matching): each training batch is augmented on the fly "
            "and the teacher runs on the same augmented input. One of none, token_dropout (delete each "
            "non-special token with probability p), mask (replace it by the mask token), span_delete (delete "
            "one span of p of the tokens), mix (with probability p join the start of a row to the end of "
            "another; mixed rows get the soft loss only). Special tokens and padding are never changed."
        },
    )
    augmentation_prob: float = field(
        default=0.1,
        metadata={"help": "p in (0, 1] of the augmentation (see augmentation); seeded by seed and step."},
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
    layer_mapping: list[str] = field(
        default_factory=lambda: ["uniform"],
        metadata={
            "help": "Which student layer learns from which teacher layer: 'uniform', 'last', or explicit "
            "student:teacher pairs such as 1:2,2:4,3:6 (0 = embedding output), comma-separated or "
            "space-separated."
        },
    )
    token_soft_positions: str = field(
        default="words",
        metadata={"help": "Token tasks: the soft loss at 'words' (labelled subwords) or 'tokens' (all)."},
    )
    allow_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "Allow resuming a checkpoint with other distillation settings (the fields above: temperature, "
            "alpha, losses, weights, schedules, layers, teachers, augmentation, cache, quantization_aware) than "
            "it was trained with; the model card records both. Off: such a resume is an error that lists the "
            "differences."
        },
    )

    def __post_init__(self):
        # List options arrive as lists of text from flags (`--relation_types q,k` or `q k`), or as text or a
        # list from a recipe or from Python: one conversion here, so every reader sees the typed list.
        self.relation_types = [kind.lower() for kind in list_items(self.relation_types)]
        self.relation_layers = list_items(self.relation_layers)
        self.layer_mapping = list_items(self.layer_mapping)
        if self.teacher_weights is not None:
            self.teacher_weights = parse_teacher_weights(list_items(self.teacher_weights))
        self.validate_distillation()
        if not self.use_cpu and _launched_multi_process() and not has_accelerator():
            # Under `accelerate launch --multi_gpu` on a CPU-only machine, accelerate forms a gloo process
            # group only when asked for the CPU; otherwise every rank silently trains alone on all the data.
            self.use_cpu = True
        super().__post_init__()

    def validate_distillation(self) -> None:
        """Check every distillation field (also re-run after a hyper-parameter search sets new values)."""
        if self.token_soft_positions not in ("words", "tokens"):
            raise ValueError(f"token_soft_positions: 'words' or 'tokens', not {self.token_soft_positions!r}.")
        for name in _SCHEDULED:
            for key in (name, f"{name}_end"):
                value = getattr(self, key)
                if value is not None and not math.isfinite(value):
                    raise ValueError(f"{key} must be a finite number, got {value}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (weight of the soft-target loss), got {self.alpha}.")
        for name in FEATURE_WEIGHTS:
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
        self.parsed_layer_mapping  # noqa: B018 (checks the pairs now)
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(
                f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}."
            )
        if not 0.0 < self.augmentation_prob <= 1.0:
            raise ValueError(f"augmentation_prob must be in (0, 1], got {self.augmentation_prob}.")
        if self.augmentation != "none" and self.teacher_cache:
            raise ValueError(
                "augmentation changes the inputs, so cached teacher logits (of the original inputs) cannot "
                "teach it: unset teacher_cache to run the teacher on the augmented inputs, or set "
                "augmentation='none'."
            )
        if self.augmentation == "mix" and not self.uses_teacher:
            raise ValueError(
                "augmentation='mix' rows have no hard label and learn from the teacher only, but alpha and every "
                "feature weight are 0: give the teacher a weight, or choose another augmentation."
            )
        parse_teacher_weights(self.teacher_weights)  # again: a search may set new values
        if self.feature_teacher < 0:
            raise ValueError(
                f"feature_teacher must be >= 0 (an index into the teachers), got {self.feature_teacher}."
            )
        if self.relation_heads is not None and self.relation_heads < 1:
            raise ValueError(f"relation_heads must be >= 1 or unset, got {self.relation_heads}.")
        _ = self.parsed_relation_types, self.parsed_relation_layers

    @property
    def parsed_layer_mapping(self) -> LayerMapping:
        return LayerMapping.parse(list_items(self.layer_mapping))

    @property
    def parsed_relation_types(self) -> tuple[str, ...]:
        kinds = tuple(kind.lower() for kind in list_items(self.relation_types))
        if not kinds or any(k not in RELATION_TYPES for k in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(
                f"relation_types={','.join(kinds)!r}: give distinct relations from q, k, v, such as 'q,k,v'."
            )
        return kinds

    @property
    def parsed_relation_layers(self) -> LayerMapping:
        items = list_items(self.relation_layers)
        try:
            mapping = LayerMapping.parse(items)
        except ValueError as error:  # the parser's message names layer_mapping
            raise ValueError(str(error).replace("layer_mapping", "relation_layers")) from None
        if any(0 in pair for pair in mapping.pairs):
            raise ValueError(
                f"relation_layers={','.join(items)!r}: layer 0 (embeddings) has no queries, keys or "
                "values; map encoder layers (>= 1), e.g. 'last' or '2:5'."
            )
        return mapping

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
        """The largest value `name` ("alpha", "hidden_weight", ...) takes during training."""
        end = getattr(self, f"{name}_end", None)
        return max(getattr(self, name), end if end is not None else 0.0)

    @property
    def uses_teacher(self) -> bool:
        """Whether any teacher signal has a weight above 0 at some step; if not, the teacher is never run."""
        return any(self.max_weight(name) > 0 for name in TEACHER_WEIGHTS)

    @property
    def scheduled(self) -> tuple[str, ...]:
        """Names of the settings that follow a non-constant schedule."""
        return tuple(name for name in _SCHEDULED if getattr(self, f"{name}_schedule") != "constant")


def distillation_fields(args_or_cls) -> tuple[str, ...]:
    """Names of the distillation settings of `args_or_cls` (arguments or their class), in field order.

    They are derived, not listed: the fields `DistillationTrainingArguments` adds to `StageTrainingArguments`
    (transformers' fields plus the two it dropped in v5, which are training settings), less `NOT_SETTINGS`.
    Arguments of another class (a fine-tuning stage's) have none.
    """
    cls = args_or_cls if isinstance(args_or_cls, type) else type(args_or_cls)
    if not issubclass(cls, DistillationTrainingArguments):
        return ()
    inherited = {f.name for f in fields(StageTrainingArguments)} | NOT_SETTINGS
    return tuple(f.name for f in fields(DistillationTrainingArguments) if f.name not in inherited)


def run_settings(args) -> dict[str, Any]:
    """What a run optimises (distillation settings) and for how long, as recorded in its output_dir (read back
    and compared on resume by `distilnlp.runs.checkpoints`)."""
    return {
        "distillation": {name: getattr(args, name) for name in distillation_fields(args)},
        "length": {"max_steps": args.max_steps, "num_train_epochs": args.num_train_epochs},
    }


def _launched_multi_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
