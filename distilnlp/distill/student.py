"""Build a student from a teacher: drop layers (DistilBERT-style init) or shrink the width (random init).

`create_student` copies the teacher's embeddings, a subset of its encoder layers and its task head into a
new model of the teacher's exact class; `create_random_student` builds a narrower, randomly initialised
model that shares the teacher's vocabulary and labels.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .layers import uniform_layers

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_ARCHITECTURES", "create_student", "create_random_student", "select_teacher_layers"]

# Config attribute under which the student records which teacher layers it was initialised from.
TEACHER_LAYERS_ATTR = "distilnlp_teacher_layers"

LAYER_STRATEGIES = ("uniform", "first", "last")


@dataclass(frozen=True)
class _Arch:
    """Where an architecture keeps its encoder layers and how its config names the size fields."""

    layers: str  # path of the nn.ModuleList of encoder layers, relative to the base model
    num_layers: str = "num_hidden_layers"
    hidden_size: str = "hidden_size"
    num_heads: str = "num_attention_heads"
    intermediate_size: str = "intermediate_size"
    # Width fields that default to the hidden size; they follow a new hidden size when the teacher kept
    # them equal (DeBERTa's pooler is a square hidden->hidden layer, ELECTRA's embeddings may be narrower).
    width_followers: tuple[str, ...] = ()


_ENCODER = "encoder.layer"

# config.model_type -> layout. Adding an architecture is one line here (and a test case).
_ARCHITECTURES: dict[str, _Arch] = {
    "bert": _Arch(_ENCODER),
    "roberta": _Arch(_ENCODER),
    "xlm-roberta": _Arch(_ENCODER),
    "electra": _Arch(_ENCODER, width_followers=("embedding_size",)),
    # MPNet's relative-position bias (encoder.relative_attention_bias) is shared by all layers: copied whole.
    "mpnet": _Arch(_ENCODER),
    "deberta-v2": _Arch(_ENCODER, width_followers=("pooler_hidden_size", "embedding_size")),
    "distilbert": _Arch(
        "transformer.layer",
        num_layers="n_layers",
        hidden_size="dim",
        num_heads="n_heads",
        intermediate_size="hidden_dim",
    ),
}

SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(_ARCHITECTURES)


def _arch_of(model: PreTrainedModel) -> _Arch:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _ARCHITECTURES:
        raise ValueError(
            f"Unsupported architecture {model_type!r} ({type(model).__name__}); "
            f"supported model types: {', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    return _ARCHITECTURES[model_type]


def _layers_prefix(model: PreTrainedModel, arch: _Arch) -> str:
    """State-dict prefix of the layer list, e.g. 'bert.encoder.layer' (or 'encoder.layer' for a bare BertModel)."""
    if model.base_model is model:
        return arch.layers
    return f"{model.base_model_prefix}.{arch.layers}"


def select_teacher_layers(
    num_teacher_layers: int, num_layers: int | None, layers: str | Sequence[int] = "uniform"
) -> list[int]:
    """0-based teacher layer indices for a student with `num_layers` layers.

    `"uniform"` picks teacher layers (i+1)*L/n (1-based, rounded down) so the last teacher layer is always kept
    (6 -> 3 gives indices [1, 3, 5]); `"first"` / `"last"` take a contiguous block; an explicit sequence of
    0-based indices is validated and returned as a list (`num_layers` may then be None).
    """
    total = num_teacher_layers
    if isinstance(layers, str):
        if layers not in LAYER_STRATEGIES:
            raise ValueError(
                f"Unknown layer selection strategy {layers!r}; use one of {', '.join(LAYER_STRATEGIES)} "
                "or a list of 0-based teacher layer indices."
            )
        if num_layers is None:
            raise ValueError(f"num_layers is required with layers={layers!r}.")
        _check_num_layers(num_layers, total)
        if layers == "first":
            return list(range(num_layers))
        if layers == "last":
            return list(range(total - num_layers, total))
        return [layer - 1 for layer in uniform_layers(num_layers, total)]

    indices = list(layers)
    if not indices:
        raise ValueError("layers must not be an empty list: a student needs at least 1 layer.")
    for index in indices:
        # bool is an int subclass; True as a layer index is surely a mistake.
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"Teacher layer indices must be integers, got {index!r} in {indices}.")
        if not 0 <= index < total:
            raise ValueError(
                f"Teacher layer index {index} is out of range: the teacher has {total} layers (valid: 0..{total - 1})."
            )
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise ValueError(f"Duplicate teacher layer indices {duplicates} in {indices}.")
    if num_layers is not None and num_layers != len(indices):
        raise ValueError(
            f"num_layers={num_layers} does not match the {len(indices)} explicit layer indices {indices}."
        )
    _check_num_layers(len(indices), total)
    return indices


def _check_num_layers(num_layers: int, total: int) -> None:
    if isinstance(num_layers, (list, tuple)):
        raise ValueError(
            f"num_layers must be an integer, got {num_layers!r}; pass explicit indices as layers=[...]."
        )
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= total:
        raise ValueError(
            f"num_layers must be an integer between 1 and the teacher's {total} layers, got {num_layers!r}."
        )


def _new_like(
    teacher: PreTrainedModel, config: PretrainedConfig, attn_implementation: str | None
) -> PreTrainedModel:
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    student = type(teacher)._from_config(config, **kwargs)
    student.to(device=teacher.device, dtype=teacher.dtype)
    student.train(teacher.training)
    return student


def create_student(
    teacher: PreTrainedModel,
    num_layers: int | None = None,
    layers: str | Sequence[int] = "uniform",
    *,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """A shallower copy of `teacher`, initialised DistilBERT-style from a subset of its layers.

    The student has the teacher's exact class and config (labels, vocabulary, widths) with the layer count
    changed; embeddings, the chosen encoder layers (in the given order) and everything else (pooler,
    classifier, DeBERTa's relative embeddings) are copied. The chosen 0-based teacher layers are recorded in
    `student.config.distilnlp_teacher_layers`.

    Args:
        teacher: a supported `...ForSequenceClassification` / `...ForTokenClassification` (or base) model.
        num_layers: student depth, 1..teacher layers; optional when `layers` is an explicit list.
        layers: `"uniform"`, `"first"`, `"last"` or a list of 0-based teacher layer indices.
        attn_implementation: e.g. `"eager"` when attention maps feed a loss; default: the teacher's.
    """
    arch = _arch_of(teacher)
    total = getattr(teacher.config, arch.num_layers)
    chosen = select_teacher_layers(total, num_layers, layers)

    config = copy.deepcopy(teacher.config)
    setattr(config, arch.num_layers, len(chosen))
    setattr(config, TEACHER_LAYERS_ATTR, chosen)
    student = _new_like(teacher, config, attn_implementation)

    prefix = _layers_prefix(teacher, arch) + "."
    source_of = {teacher_index: k for k, teacher_index in enumerate(chosen)}
    state = {}
    for name, tensor in teacher.state_dict().items():
        if not name.startswith(prefix):
            state[name] = tensor
            continue
        index, _, rest = name[len(prefix) :].partition(".")
        if int(index) in source_of:
            state[f"{prefix}{source_of[int(index)]}.{rest}"] = tensor
    # strict: every student parameter and buffer must come from the teacher.
    with torch.no_grad():
        student.load_state_dict(state, strict=True)
    return student


def relabel_student(student: PreTrainedModel, label_names: Sequence[str], order: list[int] | None) -> None:
    """Give `student` the task's class names; with `order` (`teachers.label_permutation`), reorder the rows
    of the classification head it copied from the teacher so its logits come out in the task's order."""
    student.config.id2label = dict(enumerate(label_names))
    student.config.label2id = {name: i for i, name in enumerate(label_names)}
    if order is None:
        return
    # The head's output layer: the last Linear with one output per class (registered after the encoder).
    heads = [m for m in student.modules() if isinstance(m, nn.Linear) and m.out_features == len(order)]
    if not heads:
        logger.warning("No classification layer found to reorder: the student's head starts unaligned.")
        return
    with torch.no_grad():
        heads[-1].weight.copy_(heads[-1].weight[order])
        if heads[-1].bias is not None:
            heads[-1].bias.copy_(heads[-1].bias[order])


def create_random_student(
    teacher: PreTrainedModel,
    num_layers: int | None = None,
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
    *,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """A randomly initialised student of the teacher's class, optionally shallower and narrower.

    The teacher's config is copied (vocabulary, labels, `problem_type`, dropout ...) and the given size
    fields overridden (DistilBERT's `n_layers`, `dim`, `n_heads`, `hidden_dim` are handled). Fields that
    default to the hidden size (DeBERTa's `pooler_hidden_size`, ELECTRA's `embedding_size`) follow a new
    hidden size when the teacher kept them equal to it.
    """
    arch = _arch_of(teacher)
    config = copy.deepcopy(teacher.config)
    teacher_hidden = getattr(config, arch.hidden_size)
    for name, field, value in (
        ("num_layers", arch.num_layers, num_layers),
        ("hidden_size", arch.hidden_size, hidden_size),
        ("num_attention_heads", arch.num_heads, num_attention_heads),
        ("intermediate_size", arch.intermediate_size, intermediate_size),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        setattr(config, field, value)

    new_hidden = getattr(config, arch.hidden_size)
    heads = getattr(config, arch.num_heads)
    if new_hidden % heads != 0:
        raise ValueError(
            f"hidden_size ({new_hidden}) must be divisible by num_attention_heads ({heads}); "
            f"e.g. use {heads * max(1, new_hidden // heads)} or change the head count."
        )
    if new_hidden != teacher_hidden:
        for field in arch.width_followers:
            if getattr(config, field, None) == teacher_hidden:
                setattr(config, field, new_hidden)
    if hasattr(config, TEACHER_LAYERS_ATTR):
        delattr(config, TEACHER_LAYERS_ATTR)  # a random student was not initialised from any teacher layer
    return _new_like(teacher, config, attn_implementation)


# ------------------------------------------------------------------------------ attention dropout
# BERT-class models return their attention probabilities *after* dropout, so in training mode the student's
# maps have zeroed entries and rows that sum to 1 / (1 - p): KL against the teacher explodes on the zeros
# and MSE compares noise. When attention maps are distilled, the student's attention-probability dropout is
# set to 0 (hidden-state dropout stays).


# Module-name endings of the dropout applied to attention probabilities: BERT, RoBERTa, XLM-R, ELECTRA and
# DeBERTa-v2 (`attention.self.dropout`), DistilBERT (`attention.dropout`).
_ATTENTION_PROBS_DROPOUT_SUFFIXES = ("attention.self.dropout", "attention.dropout")


def disable_attention_probs_dropout(model: nn.Module) -> int:
    """Set every attention-probability `nn.Dropout` of `model` to p=0; returns how many were changed."""
    changed = 0
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Dropout)
            and name.endswith(_ATTENTION_PROBS_DROPOUT_SUFFIXES)
            and module.p > 0
        ):
            module.p = 0.0
            changed += 1
    if changed:
        logger.warning(
            "Attention maps are distilled, so the student's attention-probability dropout was set to 0 in %d "
            "layers (maps are returned after dropout, which would corrupt the attention loss).",
            changed,
        )
    return changed
