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
    TeacherCacheError,
    _check_supported,
    _content_digest,
    _split_dataset,
    _teacher_summary,
    cache_key,
    file_digests,
    metadata_digest,
)
from .load import TeacherCache
from .run_teacher import TeacherRun, compute_teacher_logits

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- build


def build_teacher_cache(
    output_dir: str | os.PathLike,
    teacher: PreTrainedModel | str | os.PathLike | list,
    datasets: dict[str, Dataset],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    backend: str = "torch",
    top_k: int | None = None,
    batch_size: int = 64,
) -> TeacherCache:
    """Run `teacher` over each tokenized split of `datasets` and store its logits in `output_dir`.

    `teacher` is a sequence-classification model or its folder, or a list of them (an ensemble: each
    teacher's logits are stored, teacher by teacher, and every teacher is fingerprinted). The folder is written whole into a
    temporary sibling and then moved into place, so an interrupted build never leaves a cache that loads.
    An existing `output_dir` is replaced only if it is a teacher cache (or empty).
    """
    output_dir = Path(output_dir)
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    summaries = [_teacher_summary(t) for t in teachers]
    for summary in summaries:
        _check_supported(summary, top_k)
    if len(teachers) > 1 and top_k is not None:
        raise TeacherCacheError(
            "teacher_cache_top_k cannot be used with several teachers (each teacher's logits are stored in "
            "full so that their mixture is exact at every temperature); unset teacher_cache_top_k."
        )
    if len({s["num_labels"] for s in summaries}) > 1:
        raise TeacherCacheError(
            f"The teachers predict different numbers of labels ({[s['num_labels'] for s in summaries]})."
        )
    summary = summaries[0] if len(teachers) == 1 else summaries[0] | {"ensemble": summaries}
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / METADATA_FILE).exists():
        raise TeacherCacheError(
            f"{output_dir} exists and is not a teacher cache (no {METADATA_FILE}); choose another folder."
        )
    key = cache_key(teacher, tokenizer, max_length, top_k)
    runs_per_teacher = [
        compute_teacher_logits(t, datasets, backend=backend, batch_size=batch_size) for t in teachers
    ]
    runs = {
        name: TeacherRun(
            np.concatenate([r[name].logits for r in runs_per_teacher], axis=-1),  # (N, K * C)
            backend,
            sum(r[name].seconds for r in runs_per_teacher),
            sum(r[name].fp32_reruns for r in runs_per_teacher),
        )
        for name in datasets
    }

    staging = output_dir.with_name(f".{output_dir.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    splits = {}
    for name, dataset in datasets.items():
        logits = runs[name].logits
        split, mass = _split_dataset(logits, top_k)
        split.save_to_disk(str(staging / name))
        splits[name] = {
            "rows": len(split),
            "inputs": inputs_fingerprint(dataset),
            "content": _content_digest(split),
            "files": file_digests(staging / name),
            "seconds": round(runs[name].seconds, 3),
            "fp32_reruns": runs[name].fp32_reruns,
            "topk_mass": mass,
        }
    metadata = {
        "format_version": FORMAT_VERSION,
        "fingerprint": combine({"key": key.fingerprint, "data": {n: s["inputs"] for n, s in splits.items()}}),
        "key": asdict(key),
        "splits": splits,
        "num_labels": int(summaries[0]["num_labels"]),
        "num_teachers": len(teachers),
        "backend": backend,
        "teacher": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(*CORE_PACKAGES),
    }
    metadata["integrity"] = metadata_digest(metadata)
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output_dir)
    logger.info(f"Teacher cache written to {output_dir} (fingerprint {metadata['fingerprint'][:12]})")
    return TeacherCache(output_dir, metadata)
