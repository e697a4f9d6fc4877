"""Distillation losses: small pure functions with tensor shapes in their docstrings."""

from .attention import attention_kl_loss, attention_mse_loss
from .embedding import embedding_cosine_loss, embedding_mse_loss, similarity_kl_loss
from .hidden import hidden_cosine_loss, hidden_mse_loss
from .logits import logit_binary_kl_loss, logit_kl_loss, logit_mse_loss, soft_target_loss_for
from .registry import ATTENTION_LOSSES, HIDDEN_LOSSES, RELATION_LOSSES, LossRegistry, LossSpec
from .relation import relation_kl_loss, relation_log_probs

__all__ = [
    "ATTENTION_LOSSES",
    "HIDDEN_LOSSES",
    "LossRegistry",
    "LossSpec",
    "RELATION_LOSSES",
    "attention_kl_loss",
    "attention_mse_loss",
    "embedding_cosine_loss",
    "embedding_mse_loss",
    "hidden_cosine_loss",
    "hidden_mse_loss",
    "logit_binary_kl_loss",
    "logit_kl_loss",
    "logit_mse_loss",
    "relation_kl_loss",
    "relation_log_probs",
    "similarity_kl_loss",
    "soft_target_loss_for",
]
