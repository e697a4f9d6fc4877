"""Cross-tokenizer distillation: the teacher reads its own tokenization of the same text.

A teacher whose tokenizer differs from the student's (another vocabulary or tokenizer family) cannot read the
student's token ids. For sequence-level tasks (single-label, multi-label, regression) the soft targets are one
distribution or value per *example*, so each model can simply tokenize the raw text its own way.
`TeacherInputsCollator` builds the student's batch as `DataCollatorWithPadding` does and adds the teacher's
inputs, tokenized from the text with the teacher's tokenizer and its own max_length, under `teacher_`-prefixed
keys (`teacher_input_ids`, `teacher_attention_mask`, ...). The teacher's inputs travel inside the batch, so
`accelerate` shards them with the student's, and the item counts of an accumulation window (which read the
student's keys only) are those of the same-tokenizer path. Only logit losses can be compared this way: token
positions, hidden states and attention maps of the two models do not line up.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .task import MODEL_INPUT_COLUMNS

logger = logging.getLogger(__name__)

TEACHER_PREFIX = "teacher_"
# The batch keys holding the teacher's inputs (never clash with the cache's `teacher_logits` columns).
TEACHER_INPUT_KEYS = tuple(TEACHER_PREFIX + name for name in MODEL_INPUT_COLUMNS)
# Logit-only losses: the `<name>_weight` fields of the training arguments that are not feature losses.
_NOT_FEATURE_WEIGHTS = ("weight_decay",)


def _effective_max_length(max_length: int | None, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """`max_length` capped at the tokenizer's model_max_length (as `tokenize_task_data` does)."""
    model_max = getattr(tokenizer, "model_max_length", None)
    if not (isinstance(model_max, int) and 0 < model_max < 1_000_000):
        return max_length
    return model_max if max_length is None else min(max_length, model_max)


class TeacherInputsCollator:
    """Pad the student's inputs and tokenize the raw text for the teacher, in one batch.

    Rows hold the text in `text_column` and either the student's tokenized inputs (`input_ids`, ...; padded
    with `tokenizer`) or nothing else (then the text is tokenized with `tokenizer` and `max_length` too).
    Other keys (`labels`, cached teacher logits) pass through `DataCollatorWithPadding`. The text itself is
    not put in the batch.

    Output: the student's keys, (B, L_s), plus `teacher_input_ids` / `teacher_attention_mask` /
    `teacher_token_type_ids` (whichever the teacher's tokenizer returns), (B, L_t), padded to the longest row.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        teacher_tokenizer: PreTrainedTokenizerBase,
        text_column: str = "text",
        max_length: int | None = None,
        teacher_max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        for role, tok in (("tokenizer (the student's)", tokenizer), ("teacher_tokenizer", teacher_tokenizer)):
            if not isinstance(tok, PreTrainedTokenizerBase):
                raise TypeError(f"{role} must be a transformers tokenizer, got {type(tok).__name__}.")
        if teacher_tokenizer.pad_token is None:
            raise ValueError(
                "The teacher's tokenizer has no pad token, so its inputs cannot be batched: set one, e.g. "
                "teacher_tokenizer.pad_token = teacher_tokenizer.eos_token."
            )
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer
        self.text_column = text_column
        self.max_length = _effective_max_length(max_length, tokenizer)
        self.teacher_max_length = _effective_max_length(teacher_max_length, teacher_tokenizer)
        self._student_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.pad_to_multiple_of = pad_to_multiple_of

    def _texts(self, features: list[dict]) -> list[str]:
        texts = [f.get(self.text_column) for f in features]
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(
                f"Cross-tokenizer distillation needs the raw text in column {self.text_column!r} of every row; "
                f"a row has {type(texts[bad]).__name__}. Keep the text column in the dataset (the teacher "
                "tokenizes it with its own tokenizer)."
            )
        return texts

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        texts = self._texts(features)
        rows = [{k: v for k, v in f.items() if k != self.text_column} for f in features]
        if "input_ids" not in rows[0]:
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
            rows = [row | {k: values[i] for k, values in encoded.items()} for i, row in enumerate(rows)]
        batch = dict(self._student_collator(rows))
        teacher = self.teacher_tokenizer(
            texts,
            truncation=True,
            max_length=self.teacher_max_length,
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        batch.update({TEACHER_PREFIX + k: v for k, v in teacher.items() if k in MODEL_INPUT_COLUMNS})
        return batch

    def tokenize_for_teacher(self, dataset: Dataset) -> Dataset:
        """The teacher's tokenization of `dataset`'s text column, unpadded: what the teacher cache keys on.

        Same call as `tokenize_task_data` with the teacher's tokenizer, so a cache built by `cache-teacher`
        over the teacher's own tokenization of the same texts is found again.
        """
        if self.text_column not in dataset.column_names:
            raise ValueError(
                f"Cross-tokenizer distillation needs the raw text: column {self.text_column!r} is not in the "
                f"dataset (columns: {dataset.column_names})."
            )

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            return self.teacher_tokenizer(
                batch[self.text_column], truncation=True, max_length=self.teacher_max_length
            )

        return dataset.map(
            tokenize, batched=True, remove_columns=dataset.column_names, desc="Tokenizing for the teacher"
        )


def pop_teacher_inputs(inputs: dict) -> dict | None:
    """Take the `teacher_`-prefixed inputs out of a collated batch: {input_ids: (B, L_t), ...}, or None."""
    found = {key[len(TEACHER_PREFIX) :]: inputs.pop(key) for key in TEACHER_INPUT_KEYS if key in inputs}
    return found or None


def feature_losses_requested(args) -> list[str]:
    """Names of the feature-loss weights (`hidden_weight`, `attention_weight`, ...) that are > 0 at any step."""
    names = []
    for f in dataclasses.fields(args):
        if not f.name.endswith("_weight") or f.name in _NOT_FEATURE_WEIGHTS:
            continue
        value, end = getattr(args, f.name), getattr(args, f"{f.name}_end", None)
        if isinstance(value, (int, float)) and max(value, end if end is not None else 0.0) > 0:
            names.append(f.name)
    return names


def check_cross_tokenizer(student, teacher, args) -> None:
    """Raise `ValueError` unless `student` can learn from `teacher` through their own tokenizations."""
    features = feature_losses_requested(args)
    if features:
        raise ValueError(
            f"The teacher reads another tokenization than the student (TeacherInputsCollator), so only logit "
            f"losses can be compared: token positions, hidden states, attention maps and relations do not "
            f"line up. Set {', '.join(f'{n}=0' for n in features)} (and their schedules' ends)."
        )
    if getattr(args, "augmentation", "none") != "none":
        # Augmentation edits the student's token ids; the teacher reads its own tokenization of the original text,
        # so the two would no longer see the same input (the point of consistent augmentation).
        raise ValueError(
            f"augmentation={args.augmentation!r} cannot be used with a teacher that reads another tokenization: "
            "the teacher would see the un-augmented text. Set augmentation=none, or use one tokenizer for both."
        )
    for role, model in (("student", student), ("teacher", teacher)):
        if model is not None and type(model).__name__.endswith("ForTokenClassification"):
            raise ValueError(
                f"Cross-tokenizer distillation supports sequence-level tasks only; the {role} classifies "
                "tokens, whose positions differ between the two tokenizations. Use one tokenizer for both."
            )
