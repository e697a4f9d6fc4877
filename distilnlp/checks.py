"""Construction-time checks that a teacher and a student can be distilled together."""

from __future__ import annotations

import logging

from transformers import PreTrainedModel

from .mapping import LayerMapping

logger = logging.getLogger(__name__)

# Implementations that can return attention probabilities (sdpa falls back to the eager path for them).
_ATTENTION_MAP_IMPLEMENTATIONS = ("eager", "sdpa")


def check_compatible(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    mapping: LayerMapping,
    need_hidden: bool,
    need_attention: bool,
) -> tuple[tuple[int, int], ...]:
    """Raise `ValueError` (saying what to fix) unless `student` can learn from `teacher`.

    Returns the resolved `(student_layer, teacher_layer)` pairs.
    """
    s_cfg, t_cfg = student.config, teacher.config
    if s_cfg.vocab_size != t_cfg.vocab_size:
        raise ValueError(
            f"The teacher's vocabulary ({t_cfg.vocab_size} tokens) and the student's ({s_cfg.vocab_size}) differ, "
            "so the two models would read different token ids. Build the student from the teacher "
            "(distilnlp.create_student) or from a checkpoint that uses the teacher's tokenizer."
        )
    if s_cfg.num_labels != t_cfg.num_labels:
        raise ValueError(
            f"The teacher predicts {t_cfg.num_labels} labels but the student {s_cfg.num_labels}. Load the student "
            f"with num_labels={t_cfg.num_labels} (and the teacher's id2label) so their logits can be compared."
        )
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
