"""Scoring a token classifier in the benchmark: sentences given as word lists, one tag id per word.

Each word is read at its first subword (as `tokenize_token_data` labels it); words cut off at
`sequence_length` count as predicted `O`, so every stage is scored on all the test words and entities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .metrics import entity_scores

Batch = Mapping[str, np.ndarray]


def is_word_lists(texts: Sequence) -> bool:
    """Whether benchmark inputs are pre-split sentences (token classification) rather than texts."""
    return bool(texts) and isinstance(texts[0], (list, tuple))


def encode_words(tokenizer, sentences: Sequence[Sequence[str]], length: int, pad_to_length: bool):
    """The tokenizer's encoding (numpy) of pre-split sentences; `word_ids(row)` maps tokens to words."""
    return tokenizer(
        [list(s) for s in sentences],
        is_split_into_words=True,
        padding="max_length" if pad_to_length else True,
        truncation=True,
        max_length=length,
        return_tensors="np",
    )


def word_tags(encoding, logits: np.ndarray, num_words: list[int], outside: int) -> list[list[int]]:
    """Per sentence, the predicted tag id of each word (its first subword's argmax; `outside` for words
    beyond the truncation)."""
    predicted = logits.argmax(-1)
    rows = []
    for row, count in enumerate(num_words):
        tags = [outside] * count
        previous = None
        for position, word in enumerate(encoding.word_ids(row)):
            if word is not None and word != previous:
                tags[word] = int(predicted[row, position])
            previous = word
        rows.append(tags)
    return rows


def token_scores(
    stage,
    label_order: list[int] | None,
    tokenizer,
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]],
    names: Sequence[str],
    args,
) -> dict[str, float]:
    """Entity precision / recall / F1 and word accuracy (`entity_scores`) of a token-classifier stage
    (`predict_fn`: batch -> logits (B, T, C), put in the order of `names` by `label_order`) on word-tagged
    sentences, in batches of `args.batch_size` cut at `args.sequence_length` tokens."""
    if names is None:
        raise ValueError("A token-classification benchmark needs label_names (the tag names in id order).")
    outside = list(names).index("O") if "O" in names else 0
    predicted: list[list[int]] = []
    for start in range(0, len(sentences), args.batch_size):
        chunk = sentences[start : start + args.batch_size]
        encoding = encode_words(tokenizer, chunk, args.sequence_length, pad_to_length=False)
        logits = stage.predict_fn(dict(encoding))
        logits = logits if label_order is None else logits[..., label_order]
        predicted += word_tags(encoding, logits, [len(s) for s in chunk], outside)
    return entity_scores(
        [[names[i] for i in row] for row in predicted], [[names[i] for i in row] for row in tags]
    )
