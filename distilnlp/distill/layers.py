"""Which student layer learns from which teacher layer: the mapping, the checks that the two models can be
compared at those layers, and the learned projections between different hidden widths.

Layers are counted from 1 (the first encoder layer); 0 is the embedding output, as in `hidden_states[0]`.
Projections (TinyBERT's W_h, one `nn.Linear` per mapped layer pair) live on the student as a submodule so
that `Trainer` optimises, clips, synchronises (DDP) and checkpoints them with the student's own weights;
`DistillationTrainer.save_model` strips them from the final student and writes them to their own file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

STRATEGIES = ("uniform", "last")


@dataclass(frozen=True)
class LayerMapping:
    """A layer-mapping spec: `uniform`, `last`, or explicit `(student, teacher)` pairs.

    - `uniform`: embeddings 0:0, then student layer i <- teacher layer floor(i * T / S) (TinyBERT),
      e.g. 3 student layers of a 6-layer teacher: 0:0, 1:2, 2:4, 3:6. These are the layers
      `create_student(teacher, S)` copies, so each student layer learns from the layer it started as.
    - `last`: the last student layer <- the last teacher layer (DistilBERT-style).
    - explicit pairs parsed from `"1:2,2:4,3:6"`.
    """

    strategy: str
    pairs: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, spec: str | list[str]) -> LayerMapping:
        """Parse `uniform`, `last` or pairs (`"s:t,s:t"` or `["s:t", "s:t"]`); raises `ValueError` naming the
        bad part."""
        parts = [p.strip() for item in ([spec] if isinstance(spec, str) else spec) for p in item.split(",")]
        text = spec = ",".join(parts)
        if text in STRATEGIES:
            return cls(text)
        pairs = []
        for part in parts:
            fields = part.strip().split(":")
            if len(fields) != 2 or not all(f.strip().isdigit() for f in fields):
                raise ValueError(
                    f"layer_mapping={spec!r}: cannot read {part.strip()!r}. Use 'uniform', 'last', or "
                    "comma-separated student:teacher layer pairs such as '1:2,2:4,3:6' (0 = embedding output)."
                )
            pairs.append((int(fields[0]), int(fields[1])))
        students = [s for s, _ in pairs]
        if len(set(students)) != len(students):
            raise ValueError(f"layer_mapping={spec!r}: each student layer may appear only once.")
        return cls("explicit", tuple(pairs))

    def resolve(self, student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
        """Concrete `(student_layer, teacher_layer)` pairs for models of the given depths."""
        if self.strategy == "last":
            return ((student_layers, teacher_layers),)
        if self.strategy == "uniform":
            if student_layers > teacher_layers:
                raise ValueError(
                    f"layer_mapping='uniform' needs a student no deeper than the teacher, got {student_layers} "
                    f"student layers and {teacher_layers} teacher layers; give explicit pairs instead."
                )
            teacher = uniform_layers(student_layers, teacher_layers)
            return ((0, 0),) + tuple(zip(range(1, student_layers + 1), teacher, strict=True))
        for s, t in self.pairs:
            if s > student_layers or t > teacher_layers:
                raise ValueError(
                    f"layer_mapping pair {s}:{t} is out of range: the student has layers 0..{student_layers} "
                    f"and the teacher 0..{teacher_layers} (0 = embedding output)."
                )
        return self.pairs


def uniform_layers(student_layers: int, teacher_layers: int) -> list[int]:
    """1-based teacher layers floor(i * T / S), i = 1..S: evenly spaced, always ending on the last layer."""
    return [i * teacher_layers // student_layers for i in range(1, student_layers + 1)]


# ------------------------------------------------------------------------------------------- checks

# Implementations that can return attention probabilities (sdpa falls back to the eager path for them).
_ATTENTION_MAP_IMPLEMENTATIONS = ("eager", "sdpa")


def check_compatible(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    mapping: LayerMapping,
    need_hidden: bool,
    need_attention: bool,
    same_tokenizer: bool = True,
) -> tuple[tuple[int, int], ...]:
    """Raise `ValueError` (saying what to fix) unless `student` can learn from `teacher`.

    Returns the resolved `(student_layer, teacher_layer)` pairs. With `same_tokenizer=False` (each model reads
    its own tokenization, `TeacherInputsCollator`) only the labels are compared and no layers are paired.
    """
    s_cfg, t_cfg = student.config, teacher.config
    if same_tokenizer and s_cfg.vocab_size != t_cfg.vocab_size:
        raise ValueError(
            f"The teacher's vocabulary ({t_cfg.vocab_size} tokens) and the student's ({s_cfg.vocab_size}) differ, "
            "so the two models would read different token ids. Build the student from the teacher "
            "(distilnlp.create_student) or from a checkpoint that uses the teacher's tokenizer; or, for "
            "logit-only distillation, keep the raw text and pass data_collator=distilnlp.TeacherInputsCollator("
            "student_tokenizer, teacher_tokenizer) so each model reads its own tokenization."
        )
    if s_cfg.num_labels != t_cfg.num_labels:
        raise ValueError(
            f"The teacher predicts {t_cfg.num_labels} labels but the student {s_cfg.num_labels}. Load the student "
            f"with num_labels={t_cfg.num_labels} (and the teacher's id2label) so their logits can be compared."
        )
    if not same_tokenizer:
        return ()
    pairs = mapping.resolve(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
    if need_attention:
        for s, t in pairs:
            if (s == 0) != (t == 0):
                raise ValueError(
                    f"layer_mapping pair {s}:{t} maps the embedding output (layer 0), which has no attention "
                    "map, to an encoder layer: attention maps cannot be compared. Map encoder layers "
                    "(>= 1) to encoder layers, or set attention_weight=0."
                )
        if not any(s > 0 for s, _ in pairs):
            raise ValueError(
                "attention_weight > 0 but layer_mapping maps no encoder layers (only the embedding output, "
                "which has no attention map). Map at least one pair of encoder layers."
            )
        for role, model in (("teacher", teacher), ("student", student)):
            impl = getattr(model.config, "_attn_implementation", "eager") or "eager"
            if impl not in _ATTENTION_MAP_IMPLEMENTATIONS:
                raise ValueError(
                    f"The {role} uses attn_implementation={impl!r}, which cannot return attention maps, so "
                    "attention maps cannot be compared. Load it with attn_implementation='eager', or set "
                    "attention_weight=0."
                )
            if impl == "sdpa":
                logger.warning(
                    "The %s uses SDPA attention; attention maps need the eager path, which transformers falls "
                    "back to on every step. Load it with attn_implementation='eager' to silence this.",
                    role,
                )
        if s_cfg.num_attention_heads != t_cfg.num_attention_heads:
            logger.info(
                "Student has %d attention heads and teacher %d: attention maps are averaged over heads.",
                s_cfg.num_attention_heads,
                t_cfg.num_attention_heads,
            )
    return pairs


# -------------------------------------------------------------------------------------- projections

PROJECTIONS_ATTRIBUTE = "distillation_projections"


def pair_key(student_layer: int, teacher_layer: int) -> str:
    return f"s{student_layer}_t{teacher_layer}"


def attach_projections(
    student: nn.Module, pairs: tuple[tuple[int, int], ...], student_width: int, teacher_width: int
) -> nn.ModuleDict:
    """Give `student` a `nn.Linear(student_width, teacher_width)` per layer pair (reusing fitting ones)."""
    existing = getattr(student, PROJECTIONS_ATTRIBUTE, None)
    keys = [pair_key(s, t) for s, t in pairs]
    fits = isinstance(existing, nn.ModuleDict) and sorted(existing.keys()) == sorted(keys)
    if fits and all(
        m.in_features == student_width and m.out_features == teacher_width for m in existing.values()
    ):
        return existing
    projections = nn.ModuleDict({key: nn.Linear(student_width, teacher_width) for key in keys})
    student.add_module(PROJECTIONS_ATTRIBUTE, projections)
    return projections


def split_projection_state(state_dict: dict) -> tuple[dict, dict]:
    """Split a student state dict into (student weights, projection weights keyed without the prefix)."""
    prefix = PROJECTIONS_ATTRIBUTE + "."
    student = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    projections = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return student, projections


def install_projection_hook(
    student: nn.Module, projections: nn.ModuleDict, pairs: tuple[tuple[int, int], ...]
) -> None:
    """Project hidden states inside the student's forward, so DDP sees the projections as used.

    The projected states are appended to `hidden_states` (a new output key would not survive DDP's
    rebuilding of the output), after the num_hidden_layers + 1 original entries.
    """

    def append_projected_hidden_states(module, args, kwargs, output):
        hidden_states = output.get("hidden_states") if hasattr(output, "get") else None
        if hidden_states is not None:
            projected = tuple(projections[pair_key(s, t)](hidden_states[s]) for s, t in pairs)
            output["hidden_states"] = tuple(hidden_states) + projected
        return output

    previous = getattr(student, "_distilnlp_projection_hook", None)
    if previous is not None:
        previous.remove()
    student._distilnlp_projection_hook = student.register_forward_hook(
        append_projected_hidden_states, with_kwargs=True
    )
