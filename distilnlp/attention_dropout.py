"""Attention-probability dropout and attention-map losses do not mix.

BERT-class models return their attention probabilities *after* dropout, so in training mode the student's
maps have zeroed entries and rows that sum to 1 / (1 - p): KL against the teacher explodes on the zeros
and MSE compares noise. When attention maps are distilled, the student's attention-probability dropout is
set to 0 (hidden-state dropout stays).
"""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

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
