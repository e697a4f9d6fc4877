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

from ..runs.artifacts import CORE_PACKAGES, TEACHER_CACHE_METADATA_FILE, package_versions
from ..runs.folders import replace_folder
from .fingerprint import combine, inputs_fingerprint
from .format import (
    FORMAT_VERSION,
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
from .run_teacher import OnnxExport, compute_teacher_logits
from .shards import merge_shards, process_group, save_shard, slice_bounds

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
    student_tokenizer: PreTrainedTokenizerBase | None = None,
    onnx_export: OnnxExport | None = None,
) -> TeacherCache:
    """Run `teacher` over each tokenized split of `datasets` and store its logits in `output_dir`.

    `teacher` is a sequence-classification model or its folder, or a list of them (an ensemble: each
    teacher's logits are stored, teacher by teacher, and every teacher is fingerprinted); `datasets` hold the
    *teacher's* tokenization (`tokenizer`). `student_tokenizer`, when the student reads another tokenization
    of the same rows, is recorded in the key too. The ONNX backends need `onnx_export`
    (`distilnlp.onnx.export_teacher`, see `compute_teacher_logits`). The folder is written whole into a temporary sibling and
    then moved into place, so an interrupted build never leaves a cache that loads. An existing `output_dir`
    is replaced only if it is a teacher cache (or empty).

    Under `accelerate launch` with N processes every process must call this with the same arguments: process
    r runs the teachers over the r-th contiguous slice of each split only (`shards.slice_bounds`), process 0
    concatenates the slices in row order and writes the folder, and every process returns the cache. The
    folder is the one a single process would write (same rows, order, fingerprint and layout; `processes`
    in the metadata says how it was built).
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
    output_dir = Path(output_dir)
    _check_replaceable(output_dir)
    key = cache_key(teacher, tokenizer, max_length, top_k, student_tokenizer)
    width = len(teachers) * summaries[0]["num_labels"]
    rank, world, barrier = process_group()
    if world == 1:
        logits, details = _teacher_logits(teachers, datasets, width, backend, batch_size, onnx_export)
    else:
        logits, details = _sharded_teacher_logits(
            teachers, datasets, width, backend, batch_size, key, output_dir, onnx_export
        )
    cache = None
    if rank == 0:
        extra = {"processes": world}  # how it was built; the cache is the same either way
        cache = write_cache(
            output_dir, datasets, logits, key, summary, backend, top_k, details, extra, len(teachers)
        )
        if world > 1:
            shutil.rmtree(_shard_folder(output_dir), ignore_errors=True)
    barrier()  # the others read the cache only once process 0 has moved it into place
    return cache if cache is not None else TeacherCache.load(output_dir)


def _shard_folder(output_dir: Path) -> Path:
    # Same name in every process (a pid would differ); never a cache itself (no metadata).
    return output_dir.with_name(f".{output_dir.name}.shards")


def _sharded_teacher_logits(
    teachers: list,
    datasets: dict[str, Dataset],
    width: int,
    backend: str,
    batch_size: int,
    key: CacheKey,
    output_dir: Path,
    onnx_export: OnnxExport | None = None,
) -> tuple[dict[str, np.ndarray] | None, dict[str, dict] | None]:
    """Every process runs the teachers over its slice of each split; process 0 gets the whole splits' logits
    ((N, K * C) in row order) and details, the others (None, None). Collective: all processes must call it."""
    rank, world, barrier = process_group()
    staging = _shard_folder(output_dir)
    data = {name: inputs_fingerprint(d) for name, d in datasets.items()}
    fingerprint = combine({"key": key.fingerprint, "data": data})  # process 0 checks the others saw the same
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed build
        staging.mkdir(parents=True)
    barrier()
    bounds = {name: slice_bounds(len(d), world, rank) for name, d in datasets.items()}
    # A contiguous range selects without an indices mapping; `select` rejects an empty range past the end.
    slices = {
        n: d.select(range(*bounds[n]) if bounds[n][1] > bounds[n][0] else []) for n, d in datasets.items()
    }
    logits, details = _teacher_logits(teachers, slices, width, backend, batch_size, onnx_export)
    splits = {n: {"start": bounds[n][0], "rows": len(slices[n]), **details[n]} for n in datasets}
    save_shard(staging, rank, world, logits, {"fingerprint": fingerprint, "splits": splits})
    barrier()
    if rank != 0:
        return None, None
    # A failure here ends process 0, and `accelerate launch` then stops the others waiting at the barrier.
    return merge_shards(staging, world, {n: len(d) for n, d in datasets.items()}, fingerprint)


def _teacher_logits(
    teachers: list,
    datasets: dict[str, Dataset],
    width: int,
    backend: str,
    batch_size: int,
    onnx_export: OnnxExport | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """({split: (N, K * C) float32 logits, teacher by teacher}, {split: seconds and fp32 re-runs}).

    `width` is K * C; empty splits (a process's slice of a split smaller than the process count) get (0, K * C)
    without running the teachers.
    """
    filled = {name: d for name, d in datasets.items() if len(d)}
    runs = (
        [
            compute_teacher_logits(t, filled, backend=backend, batch_size=batch_size, onnx_export=onnx_export)
            for t in teachers
        ]
        if filled
        else []
    )
    logits, details = {}, {}
    for name in datasets:
        if name not in filled:
            logits[name], details[name] = np.zeros((0, width), np.float32), {"seconds": 0.0, "fp32_reruns": 0}
            continue
        logits[name] = np.concatenate([r[name].logits for r in runs], axis=-1)  # (N, K * C)
        details[name] = {
            "seconds": round(sum(r[name].seconds for r in runs), 3),
            "fp32_reruns": sum(r[name].fp32_reruns for r in runs),
        }
    return logits, details


def _check_replaceable(output_dir: Path) -> None:
    if (
        output_dir.exists()
        and any(output_dir.iterdir())
        and not (output_dir / TEACHER_CACHE_METADATA_FILE).exists()
    ):
        raise TeacherCacheError(
            f"{output_dir} exists and is not a teacher cache (no {TEACHER_CACHE_METADATA_FILE}); choose another folder."
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
    (staging / TEACHER_CACHE_METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    replace_folder(staging, output_dir)  # atomic: the old cache stays whole until the new one is in place
    logger.info(f"Teacher cache written to {output_dir} (fingerprint {metadata['fingerprint'][:12]})")
    return TeacherCache(output_dir, metadata)
