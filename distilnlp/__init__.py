"""distilnlp: distill fine-tuned BERT-class teachers into small students and ship them as int8 ONNX."""

from .data.teacher_inputs import TeacherInputsCollator
from .distill.arguments import DistillationTrainingArguments
from .distill.layers import LayerMapping
from .distill.losses import (
    attention_kl_loss,
    attention_mse_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    logit_kl_loss,
    relation_kl_loss,
)
from .distill.student import create_random_student, create_student
from .distill.trainer import DistillationTrainer, NonFiniteLossError

__version__ = "0.1.0"

__all__ = [
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "LayerMapping",
    "NonFiniteLossError",
    "TeacherInputsCollator",
    "attention_kl_loss",
    "create_student",
    "create_random_student",
    "attention_mse_loss",
    "hidden_cosine_loss",
    "hidden_mse_loss",
    "logit_kl_loss",
    "relation_kl_loss",
]
