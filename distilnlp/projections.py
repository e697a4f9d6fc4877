"""Learned linear maps from student to teacher hidden width (TinyBERT's W_h), one per mapped layer pair.

They live on the student as a submodule so that `Trainer` optimises, clips, synchronises (DDP) and
checkpoints them with the student's own weights; `DistillationTrainer.save_model` strips them from the
final student and writes them to their own file.
"""

from __future__ import annotations

from torch import nn

PROJECTIONS_ATTRIBUTE = "distillation_projections"
PROJECTIONS_FILE = "distillation_projections.safetensors"


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
