"""Tokenization of the task data: every split truncated to `max_length`, the label column renamed to `labels`."""

from __future__ import annotations

import logging

from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase

from .task import DataArguments

logger = logging.getLogger(__name__)


def check_max_length(tokenizer: PreTrainedTokenizerBase, max_length: int, flag: str = "max_length") -> None:
    """`max_length` must leave room for at least one text token beside the tokenizer's special tokens."""
    special = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length <= special:
        raise ValueError(
            f"{flag}={max_length} leaves no room for text: the tokenizer adds {special} special token(s) to "
            f"every input; use {flag} >= {special + 1}."
        )


def tokenize_task_data(
    dataset_dict: DatasetDict, tokenizer: PreTrainedTokenizerBase, data_args: DataArguments
) -> DatasetDict:
    """Tokenize every split (truncation to `max_length`, no padding: pad per batch with
    `DataCollatorWithPadding`); keeps only the tokenizer outputs and the label, renamed to `labels`."""
    text_column, label_column = data_args.text_column, data_args.label_column
    max_length = data_args.max_length
    check_max_length(tokenizer, max_length)
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < max_length:
        logger.warning(
            "max_length=%d exceeds the tokenizer's model_max_length=%d; using %d.",
            max_length,
            model_max,
            model_max,
        )
        max_length = model_max

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch[text_column], truncation=True, max_length=max_length)

    tokenized = {}
    for split, dataset in dataset_dict.items():
        for column in (text_column, label_column):
            if column not in dataset.column_names:
                raise ValueError(
                    f"Column {column!r} not found in split {split!r}; available columns: {dataset.column_names}."
                )
        remove = [c for c in dataset.column_names if c != label_column]
        dataset = dataset.map(tokenize, batched=True, remove_columns=remove, desc=f"Tokenizing {split}")
        if label_column != "labels":
            dataset = dataset.rename_column(label_column, "labels")
        tokenized[split] = dataset
    return DatasetDict(tokenized)
