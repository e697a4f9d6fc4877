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
    teacher: PreTrainedModel | str | os.PathLike,
    datasets: dict[str, Dataset],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    backend: str = "torch",
    top_k: int | None = None,
    batch_size: int = 64,
) -> TeacherCache:
    """Run `teacher` over each tokenized split of `datasets` and store its logits in `output_dir`.

    `teacher` is a sequence-classification model or its folder. The folder is written whole into a
    temporary sibling and then moved into place, so an interrupted build never leaves a cache that loads.
    An existing `output_dir` is replaced only if it is a teacher cache (or empty).

    Under `accelerate launch` (N processes), every process must call this with the same arguments: process r
    runs the teacher over the r-th contiguous 1/N of each split and writes it as the shard
    `<split>/shard-r-of-N`; the main process then checks the shards, writes the metadata (digests over all
    shards, in row order) and moves the folder into place, and every process returns the same cache. In one
    process a split is written as a single dataset `<split>/`. Readers (`TeacherCache.logits`) take both.
    """
    output_dir = Path(output_dir)
    rank, world, barrier = _process_group()
    summary = _teacher_summary(teacher)
    _check_supported(summary, top_k)
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / METADATA_FILE).exists():
        raise TeacherCacheError(
            f"{output_dir} exists and is not a teacher cache (no {METADATA_FILE}); choose another folder."
        )
    key = cache_key(teacher, tokenizer, max_length, top_k)
    inputs = {name: inputs_fingerprint(dataset) for name, dataset in datasets.items()}
    fingerprint = combine({"key": key.fingerprint, "data": inputs})
    # Same name in every process (a pid would differ); the fingerprint keeps unrelated builds apart.
    staging = output_dir.with_name(f".{output_dir.name}.building-{fingerprint[:16]}")
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    shards = {
        name: dataset.shard(world, rank, contiguous=True) if world > 1 else dataset
        for name, dataset in datasets.items()
    }
    runs = compute_teacher_logits(teacher, shards, backend=backend, batch_size=batch_size)
    for name in datasets:
        split, mass = _split_dataset(runs[name].logits, top_k)
        record = {
            "rows": len(split),
            "seconds": round(runs[name].seconds, 3),
            "fp32_reruns": runs[name].fp32_reruns,
            "topk_mass": mass,
        }
        target = staging / name / shard_name(rank, world) if world > 1 else staging / name
        split.save_to_disk(str(target))
        (staging / f"{name}.{shard_name(rank, world)}.json").write_text(json.dumps(record))
    barrier()
    if rank == 0:
        splits = {}
        for name in datasets:
            records = [
                json.loads((staging / f"{name}.{shard_name(r, world)}.json").read_text())
                for r in range(world)
            ]
            for r in range(world):
                (staging / f"{name}.{shard_name(r, world)}.json").unlink()
            written = TeacherCache._read_split(staging / name)
            splits[name] = {
                "rows": len(written),
                "inputs": inputs[name],
                "content": _content_digest(written),
                "shards": world,
                **_merge_shard_records(records),
            }
            if len(written) != len(datasets[name]):
                raise TeacherCacheError(
                    f"The shards of split {name!r} hold {len(written)} rows, the split has {len(datasets[name])}."
                )
        metadata = {
            "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "key": asdict(key),
            "splits": splits,
            "num_labels": int(next(iter(runs.values())).logits.shape[-1]),
            "backend": backend,
            "processes": world,
            "teacher": summary,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(*CORE_PACKAGES),
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(output_dir)
        logger.info(f"Teacher cache written to {output_dir} (fingerprint {fingerprint[:12]}, {world} shards)")
    barrier()
    return TeacherCache.load(output_dir)
