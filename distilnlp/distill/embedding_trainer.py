"""`EmbeddingDistillationTrainer`: a `transformers.Trainer` that teaches a `SentenceTransformer` student the
teacher's sentence embeddings (precomputed: `distilnlp.teacher_cache.embeddings`).

    trainer = EmbeddingDistillationTrainer(student, args, train_dataset=rows, processing_class=student.tokenizer)

Rows hold the student's tokenization (`input_ids`, `attention_mask`, ...) and `teacher_embedding` (D floats).
The loss is `mse_weight * MSE + cosine_weight * (1 - cos) + similarity_weight * in-batch similarity KL`
(`distill.losses.embedding`), each a sum over examples divided by the number of examples of the whole
gradient-accumulation window and all processes, as `DistillationTrainer` normalises: accumulation gives one
large batch's gradients for MSE and cosine (the similarity KL ranks within each micro-batch by definition).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from ..runs.sentence_folder import load_sentence_model
from .losses.embedding import embedding_cosine_loss, embedding_mse_loss, similarity_kl_loss

TEACHER_EMBEDDING_COLUMN = "teacher_embedding"
TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class EmbeddingDistillationArguments(TrainingArguments):
    """`TrainingArguments` plus the embedding-distillation loss weights."""

    mse_weight: float = field(default=1.0, metadata={"help": "Weight of the embedding MSE (per dimension)."})
    cosine_weight: float = field(default=0.0, metadata={"help": "Weight of 1 - cos(student, teacher)."})
    similarity_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the in-batch similarity-matrix KL (rank the batch as the teacher)."},
    )
    similarity_temperature: float = field(
        default=0.05, metadata={"help": "Temperature of the in-batch similarity softmax (> 0)."}
    )

    def __post_init__(self):
        super().__post_init__()
        weights = {"mse_weight": self.mse_weight, "cosine_weight": self.cosine_weight}
        weights["similarity_weight"] = self.similarity_weight
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if not any(weights.values()):
            raise ValueError(
                "Every loss weight is 0: set mse_weight, cosine_weight or similarity_weight > 0."
            )
        if self.similarity_temperature <= 0:
            raise ValueError(f"similarity_temperature must be > 0, got {self.similarity_temperature}.")


class EmbeddingCollator:
    """Pads the token columns with the student's tokenizer and stacks the teacher embeddings, (B, D) float32."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        tokens = [{k: row[k] for k in TOKEN_COLUMNS if k in row} for row in rows]
        batch = dict(self.tokenizer.pad(tokens, return_tensors="pt"))
        batch[TEACHER_EMBEDDING_COLUMN] = torch.tensor([row[TEACHER_EMBEDDING_COLUMN] for row in rows])
        return batch


class EmbeddingDistillationTrainer(Trainer):
    """`Trainer` for a `SentenceTransformer` student against cached teacher embeddings (see the module doc).

    `save_model` (and every checkpoint) writes a sentence-transformers folder; resuming reads it back.
    """

    def __init__(
        self, model=None, args: EmbeddingDistillationArguments | None = None, processing_class=None, **kwargs
    ):
        if not isinstance(args, EmbeddingDistillationArguments):
            raise TypeError("EmbeddingDistillationTrainer needs EmbeddingDistillationArguments as args.")
        kwargs.setdefault("data_collator", EmbeddingCollator(processing_class))
        super().__init__(model=model, args=args, processing_class=processing_class, **kwargs)
        # compute_loss normalises over the accumulation window (get_batch_samples): no second division.
        self.model_accepts_loss_kwargs = True
        self._window_examples: torch.Tensor | None = None

    def _set_signature_columns_if_needed(self):
        # SentenceTransformer.forward takes one features dict: name the columns the collator reads.
        self._signature_columns = [*TOKEN_COLUMNS, TEACHER_EMBEDDING_COLUMN]

    def loss_components(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted loss as a SUM over the micro-batch's examples (student, teacher: (B, D))."""
        args, out = self.args, {}
        if args.mse_weight:
            out["mse"] = args.mse_weight * embedding_mse_loss(student, teacher, "sum")
        if args.cosine_weight:
            out["cosine"] = args.cosine_weight * embedding_cosine_loss(student, teacher, "sum")
        if args.similarity_weight:
            kl = similarity_kl_loss(student, teacher, args.similarity_temperature, "sum")
            out["similarity"] = args.similarity_weight * kl
        return out

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher = inputs.pop(TEACHER_EMBEDDING_COLUMN)
        student = model(inputs)["sentence_embedding"]
        if model.training and self._window_examples is not None:
            count, scale = self._window_examples, self.accelerator.num_processes  # DDP averages: undo it
        else:
            count, scale = torch.tensor(float(len(student))), 1
        loss = sum(self.loss_components(student, teacher).values()) * scale / count.clamp_min(1)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(
                f"The embedding distillation loss is not finite at step {self.state.global_step}; lower the "
                "learning rate or check the texts for empty rows."
            )
        return (loss, {"sentence_embedding": student}) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also count the examples of the whole window over all processes."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples:
            local = torch.tensor([float(sum(len(b["input_ids"]) for b in batch_samples))], device=device)
            self._window_examples = self.accelerator.gather(local).sum()
            num_items = self._window_examples  # non-None: training_step must not divide by accumulation
        return batch_samples, num_items

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _save(self, output_dir: str | None = None, state_dict=None):
        output_dir = output_dir or self.args.output_dir
        self.accelerator.unwrap_model(self.model).save(output_dir)
        torch.save(self.args, f"{output_dir}/training_args.bin")

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        saved = load_sentence_model(resume_from_checkpoint, role="checkpoint")
        (model or self.model).load_state_dict(saved.state_dict())

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self._window_examples = None
