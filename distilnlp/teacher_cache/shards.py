"""A teacher-cache build split across the processes of `accelerate launch`.

Process r of N runs the teacher over the r-th contiguous slice of every split (`slice_bounds`) and saves its
logits in a staging folder next to the cache (`save_shard`: one `.npy` per split, then a JSON record that
marks the shard complete). After a barrier, process 0 concatenates the slices in rank order (`merge_shards`)
and writes the cache with the same `write_cache` as a one-process build, so the folder, its digests and its
fingerprint are those of a one-process build and the loader needs no shard logic. The staging folder is
never a cache (no metadata), so a build killed at any point leaves nothing that loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .format import TeacherCacheError


def process_group() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) of the `accelerate launch` processes; (0, 1, no-op) in a single process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            # One process: leave accelerate's shared state alone (a later Accelerator(cpu=True) must work).
            return 0, 1, lambda: None
        from accelerate import PartialState

        # Join the group `accelerate launch` prepared; gloo without an accelerator, as the Trainer does
        # (PartialState() alone would see no GPU and fall back to one process).
        PartialState(cpu=not torch.accelerator.is_available())
    return dist.get_rank(), dist.get_world_size(), dist.barrier


def slice_bounds(rows: int, world: int, rank: int) -> tuple[int, int]:
    """Rows [start, stop) of process `rank`: contiguous, in rank order; the first `rows % world` get one more.

    Slices may be empty (fewer rows than processes); together they cover range(rows) exactly once.
    """
    base, extra = divmod(rows, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_name(rank: int, world: int) -> str:
    return f"rank-{rank:05d}-of-{world:05d}"


def save_shard(folder: Path, rank: int, world: int, logits: dict[str, np.ndarray], record: dict) -> None:
    """Write one process's slice: `logits[split]` ((n_r, K * C) float32) as .npy, then `record` (JSON).

    `record` holds `fingerprint` (of the key and of the *whole* splits as this process saw them) and, per
    split, `start`, `rows` and timing facts. It is written last and renamed into place, so its presence means
    the shard is complete.
    """
    name = shard_name(rank, world)
    for split, array in logits.items():
        np.save(folder / f"{split}.{name}.npy", np.ascontiguousarray(array, dtype=np.float32))
    partial = folder / f".{name}.json.partial"
    partial.write_text(json.dumps(record, sort_keys=True))
    partial.rename(folder / f"{name}.json")


def merge_shards(
    folder: Path, world: int, rows: dict[str, int], fingerprint: str
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Concatenate the `world` shards in `folder` into whole splits, checking they fit together.

    `rows[split]` is the split's row count and `fingerprint` the one process 0 computed. Returns
    ({split: (N, K * C) float32 logits in row order}, {split: details for the cache metadata}). Raises
    `TeacherCacheError` when a shard is missing, a process saw other data or a slice is out of place.
    """
    records = []
    for rank in range(world):
        path = folder / f"{shard_name(rank, world)}.json"
        if not path.is_file():
            raise TeacherCacheError(f"Process {rank} of {world} left no shard in {folder}; build again.")
        records.append(json.loads(path.read_text()))
    if any(r["fingerprint"] != fingerprint for r in records):
        differ = [rank for rank, r in enumerate(records) if r["fingerprint"] != fingerprint]
        raise TeacherCacheError(
            f"Processes {differ} built the cache from other data, tokenizer or teacher than process 0 (their "
            "fingerprints differ): every process must pass the same splits, in the same order."
        )
    logits, details = {}, {}
    for split, total in rows.items():
        parts, start = [], 0
        for rank, record in enumerate(records):
            entry = record["splits"][split]
            if (
                entry["start"] != start
                or entry["start"] + entry["rows"] != slice_bounds(total, world, rank)[1]
            ):
                raise TeacherCacheError(f"The shard of process {rank} does not hold its rows of {split!r}.")
            array = np.load(folder / f"{split}.{shard_name(rank, world)}.npy", mmap_mode="r")
            if len(array) != entry["rows"]:
                raise TeacherCacheError(f"The shard of process {rank} holds {len(array)} rows of {split!r}.")
            parts.append(array)
            start += entry["rows"]
        logits[split] = np.concatenate(parts, axis=0).astype(np.float32, copy=False)  # (N, K * C)
        details[split] = {
            # Processes run side by side: a split took as long as its slowest slice.
            "seconds": max(r["splits"][split]["seconds"] for r in records),
            "fp32_reruns": sum(r["splits"][split]["fp32_reruns"] for r in records),
        }
    return logits, details
