"""Build a teacher cache: run the teacher over each split and write the folder atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..artifacts import CORE_PACKAGES, package_versions
from .fingerprint import combine, inputs_fingerprint
from .format import (
    FORMAT_VERSION,
    METADATA_FILE,
    CacheKey,
    TeacherCacheError,
    _check_supported,
    _content_digest,
    _split_dataset,
    _teacher_summary,
    cache_key,
)
from .load import TeacherCache
from .run_teacher import compute_teacher_logits

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- build


def build_teacher_cache(
    output_dir: str | os.PathLike,
    teacher: PreTrainedModel | str | os.PathLike,
    datasets: dict[str, Dataset],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    backend: str = "torch",
    top_k: int | None = None,
    batch_size: int = 64,
    student_tokenizer: PreTrainedTokenizerBase | None = None,
) -> TeacherCache:
    """Run `teacher` over each tokenized split of `datasets` and store its logits in `output_dir`.

    `teacher` is a sequence-classification model or its folder; `datasets` hold the *teacher's* tokenization
    (`tokenizer`). `student_tokenizer`, when the student reads another tokenization of the same rows, is
    recorded in the key too. The folder is written whole into a temporary sibling and then moved into place,
    so an interrupted build never leaves a cache that loads. An existing `output_dir` is replaced only if it
    is a teacher cache (or empty).
    """
    summary = _teacher_summary(teacher)
    _check_supported(summary, top_k)
    _check_replaceable(Path(output_dir))
    key = cache_key(teacher, tokenizer, max_length, top_k, student_tokenizer)
    runs = compute_teacher_logits(teacher, datasets, backend=backend, batch_size=batch_size)
    logits = {name: run.logits for name, run in runs.items()}
    details = {
        name: {"seconds": round(run.seconds, 3), "fp32_reruns": run.fp32_reruns} for name, run in runs.items()
    }
    return write_cache(output_dir, datasets, logits, key, summary, backend, top_k, details)


def _check_replaceable(output_dir: Path) -> None:
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / METADATA_FILE).exists():
        raise TeacherCacheError(
            f"{output_dir} exists and is not a teacher cache (no {METADATA_FILE}); choose another folder."
        )


def write_cache(
    output_dir: str | os.PathLike,
    datasets: dict[str, Dataset],
    logits: dict[str, np.ndarray],
    key: CacheKey,
    summary: dict,
    backend: str,
    top_k: int | None = None,
    details: dict[str, dict] | None = None,
    extra: dict | None = None,
) -> TeacherCache:
    """Write `logits[name]` ((N, C) float32, rows in `datasets[name]`'s order) as a cache folder, atomically.

    `datasets` hold the tokenized inputs the logits belong to (their digests key the splits); `details` add
    per-split facts, `extra` top-level metadata entries.
    """
    output_dir = Path(output_dir)
    _check_replaceable(output_dir)
    staging = output_dir.with_name(f".{output_dir.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    splits = {}
    for name, dataset in datasets.items():
        split, mass = _split_dataset(np.asarray(logits[name], dtype=np.float32), top_k)
        split.save_to_disk(str(staging / name))
        splits[name] = {
            "rows": len(split),
            "inputs": inputs_fingerprint(dataset),
            "content": _content_digest(split),
            "topk_mass": mass,
            **(details or {}).get(name, {}),
        }
    metadata = {
        "format_version": FORMAT_VERSION,
        "fingerprint": combine({"key": key.fingerprint, "data": {n: s["inputs"] for n, s in splits.items()}}),
        "key": asdict(key),
        "splits": splits,
        "num_labels": int(np.asarray(next(iter(logits.values()))).shape[-1]),
        "backend": backend,
        "teacher": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(*CORE_PACKAGES),
        **(extra or {}),
    }
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output_dir)
    logger.info(f"Teacher cache written to {output_dir} (fingerprint {metadata['fingerprint'][:12]})")
    return TeacherCache(output_dir, metadata)
