"""Build a teacher cache: run the teacher over each split and write the folder atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
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
    file_digests,
    metadata_digest,
)
from .load import TeacherCache
from .run_teacher import compute_teacher_logits

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- build


def _process_group() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) of the `accelerate launch` processes; (0, 1, no-op) in a single process."""
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes, state.wait_for_everyone


def shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}"


def _merge_shard_records(records: list[dict]) -> dict:
    masses = [r["topk_mass"] for r in records if r["topk_mass"] is not None]
    rows = [r["rows"] for r in records]
    mass = None
    if masses:
        mean = sum(m["mean"] * n for m, n in zip(masses, rows, strict=True)) / max(1, sum(rows))
        mass = {"mean": mean, "min": min(m["min"] for m in masses)}
    return {
        # Shards run side by side: the wall time of a split is that of its slowest shard.
        "seconds": max(r["seconds"] for r in records),
        "fp32_reruns": sum(r["fp32_reruns"] for r in records),
        "topk_mass": mass,
    }


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
    student_tokenizer: PreTrainedTokenizerBase | None = None,
) -> TeacherCache:
    """Run `teacher` over each tokenized split of `datasets` and store its logits in `output_dir`.

    `teacher` is a sequence-classification model or its folder, or a list of them (an ensemble: each
    teacher's logits are stored, teacher by teacher, and every teacher is fingerprinted); `datasets` hold the
    *teacher's* tokenization (`tokenizer`). `student_tokenizer`, when the student reads another tokenization
    of the same rows, is recorded in the key too. The folder is written whole into a temporary sibling and
    then moved into place, so an interrupted build never leaves a cache that loads. An existing `output_dir`
    is replaced only if it is a teacher cache (or empty).
    """
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
    _check_replaceable(Path(output_dir))
    key = cache_key(teacher, tokenizer, max_length, top_k, student_tokenizer)
    runs = [compute_teacher_logits(t, datasets, backend=backend, batch_size=batch_size) for t in teachers]
    logits = {
        name: np.concatenate([r[name].logits for r in runs], axis=-1) for name in datasets
    }  # (N, K * C)
    details = {
        name: {
            "seconds": round(sum(r[name].seconds for r in runs), 3),
            "fp32_reruns": sum(r[name].fp32_reruns for r in runs),
        }
        for name in datasets
    }
    return write_cache(
        output_dir, datasets, logits, key, summary, backend, top_k, details, num_teachers=len(teachers)
    )


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
    num_teachers: int = 1,
) -> TeacherCache:
    """Write `logits[name]` ((N, K * C) float32 for K teachers, rows in `datasets[name]`'s order) as a cache
    folder, atomically.

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
            "files": file_digests(staging / name),
            "topk_mass": mass,
            **(details or {}).get(name, {}),
        }
    metadata = {
        "format_version": FORMAT_VERSION,
        "fingerprint": combine({"key": key.fingerprint, "data": {n: s["inputs"] for n, s in splits.items()}}),
        "key": asdict(key),
        "splits": splits,
        "num_labels": int(np.asarray(next(iter(logits.values()))).shape[-1]) // num_teachers,
        "num_teachers": num_teachers,
        "backend": backend,
        "teacher": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(*CORE_PACKAGES),
        **(extra or {}),
    }
    metadata["integrity"] = metadata_digest(metadata)
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output_dir)
    logger.info(f"Teacher cache written to {output_dir} (fingerprint {metadata['fingerprint'][:12]})")
    return TeacherCache(output_dir, metadata)
