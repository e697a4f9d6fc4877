"""Turn soft labels brought from outside (`distilnlp.data.soft_labels`) into a teacher cache.

The cache has the format `build_teacher_cache` writes, so `DistillationTrainer(teacher_model=None,
args=DistillationTrainingArguments(teacher_cache=...))` trains from it unchanged. Its key's `teacher` is the
soft labels' content fingerprint (`soft-labels:<sha256>`), its `tokenizer` the student's (the cached splits
are the student's tokenized inputs). Rows the file does not cover hold NaN logits: the trainer gives them
the hard-label loss only (and rows without a label, the soft loss only).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..data.soft_labels import SoftLabels
from ..runs.artifacts import TEACHER_CACHE_METADATA_FILE
from .build import write_cache
from .fingerprint import inputs_fingerprint, tokenizer_fingerprint
from .format import CacheKey, TeacherCacheError
from .load import TeacherCache

logger = logging.getLogger(__name__)

BACKEND = "soft_labels"


def soft_label_key(soft_labels: SoftLabels, tokenizer: PreTrainedTokenizerBase | None, max_length=None):
    return CacheKey(
        teacher=f"soft-labels:{soft_labels.fingerprint}",
        tokenizer=tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        max_length=max_length,
        top_k=None,
    )


def build_soft_label_cache(
    output_dir: str | os.PathLike,
    soft_labels: SoftLabels,
    datasets: dict[str, Dataset],
    keys: dict[str, list],
    *,
    all_keys: list | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
) -> TeacherCache:
    """Write the soft labels of each split's rows as a teacher cache in `output_dir` (reused when current).

    datasets: the student's tokenized splits (e.g. train, validation); keys[name]: each split's texts (or
    ids), row for row. `all_keys`: every key of the task (all splits, test included); a file row matching
    none of them is an error naming it (default: the keys of `datasets`).
    """
    soft_labels.check_all_matched(all_keys if all_keys is not None else [k for v in keys.values() for k in v])
    key = soft_label_key(soft_labels, tokenizer, max_length)
    existing = _current(Path(output_dir), key, datasets)
    if existing is not None:
        logger.info(f"Soft-label cache {output_dir} is up to date (fingerprint {existing.fingerprint[:12]}).")
        return existing
    logits, covered = {}, {}
    for name, dataset in datasets.items():
        if len(keys[name]) != len(dataset):
            raise TeacherCacheError(f"keys[{name!r}] has {len(keys[name])} entries for {len(dataset)} rows.")
        logits[name], _ = soft_labels.align(keys[name])
        covered[name] = int(np.isfinite(logits[name]).all(-1).sum())
        logger.info(f"Soft labels cover {covered[name]} of {len(dataset)} rows of {name!r}.")
    if covered.get("train", 1) == 0:  # every file row matched a task row: validation / test ones only
        others = ", ".join(f"{covered[n]} {n}" for n in covered if n != "train") or "none"
        raise TeacherCacheError(
            f"The soft labels in {soft_labels.path} cover none of the {len(datasets['train'])} training rows: "
            f"its {len(soft_labels.keys)} rows label other splits' {soft_labels.key}s only (rows covered: "
            f"{others}; the rest are test rows); label the training {soft_labels.key}s, which the student "
            "learns from."
        )
    summary = {
        "name": f"soft labels ({Path(soft_labels.path).name})",
        "task": "sequence-classification",
        "num_labels": len(soft_labels.label_names),
        "label_names": soft_labels.label_names,  # already in the task's order
        "problem_type": "single_label_classification",
        "shape": None,
    }
    details = {name: {"covered": covered[name]} for name in datasets}
    extra = {
        "soft_labels": {
            "path": soft_labels.path,
            "fingerprint": soft_labels.fingerprint,
            "kind": soft_labels.kind,
            "key": soft_labels.key,
            "rows": len(soft_labels.keys),
            "temperature": soft_labels.temperature,
            "label_names": soft_labels.label_names,
        }
    }
    return write_cache(output_dir, datasets, logits, key, summary, BACKEND, details=details, extra=extra)


def _current(path: Path, key: CacheKey, datasets: dict[str, Dataset]) -> TeacherCache | None:
    """The cache in `path` if it was built from the same soft labels, tokenizer and inputs, else None."""
    if not (path / TEACHER_CACHE_METADATA_FILE).exists():
        return None
    try:
        cache = TeacherCache.load(path)
    except TeacherCacheError:
        return None
    splits = cache.metadata["splits"]
    same_inputs = all(
        name in splits and splits[name]["inputs"] == inputs_fingerprint(d) for name, d in datasets.items()
    )
    return cache if cache.key == key and same_inputs else None
