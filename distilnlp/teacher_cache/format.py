"""A cache of a teacher's logits over tokenized transfer data, so distillation need not run the teacher.

Layout of a cache folder (Arrow via `datasets.save_to_disk`; no pickle anywhere):

    distilnlp_teacher_cache.json   key, per-split row counts and content digests, how it was built
    train/, validation/, ...       one Arrow dataset per split, rows in the split's order

Each split holds `teacher_logits` (C float32 per example), or with `top_k` the k largest logits
`teacher_topk_logits` and their class ids `teacher_topk_indices`.

**Several teachers.** A cache built for K > 1 teachers holds each teacher's logits, K * C per example,
teacher by teacher (`num_teachers` in the metadata), and its key fingerprints every teacher in order. The
mixture p = sum_i w_i softmax(z_i / T) depends on T, so the logits of the mixture at one temperature could not
serve a temperature schedule or search; each teacher's logits serve every T and every `teacher_weights`.
Top-k is not available for several teachers.

**Several processes.** Under `accelerate launch` each process runs the teacher over a contiguous slice of
every split and process 0 writes the folder (`shards`): the layout, digests and fingerprint are those of a
one-process build; only `processes` in the metadata tells them apart.

**Key.** A cache is reused only when the teacher's weights, the tokenizer, the tokenized inputs of the split
(ids, masks and order; labels excluded) and, when known, `max_length` and `top_k` all match what it was built
from (`distilnlp.teacher_cache.fingerprint`). Otherwise `StaleTeacherCacheError` says which part changed. A folder that
cannot be read, or whose logits no longer match the digests written at build time, raises
`CorruptTeacherCacheError`. The SHA-256 of every file is recorded at build time and checked *before* Arrow
opens a file (a damaged Arrow file can abort the process inside Arrow), and the metadata carries a digest of
itself, so an edited key or fingerprint is caught too.

**Top-k.** Only the k largest logits are kept; the soft targets are then the teacher's softmax renormalised
over those k classes (the other classes get probability 0). Renormalising is exact for the ratios between
the kept classes at *every* temperature, so temperature schedules and searches stay correct; spreading the
left-over mass over the other classes instead would need that mass at each temperature, which depends on the
dropped logits. The error is the teacher mass outside the top k (`topk_mass` in the metadata: its mean
and minimum at T = 1).

Only sequence-level teachers (`*ForSequenceClassification`) are supported: token classification would need
one distribution per token and is rejected with an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Features, Sequence, Value
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.task import label_names_of
from ..runs.artifacts import TEACHER_LOGITS_COLUMN
from ..runs.model_files import model_task
from .fingerprint import combine, inputs_fingerprint, teachers_fingerprint, tokenizer_fingerprint

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: SHA-256 of every file (checked before Arrow opens it) and of the metadata
LOGITS = TEACHER_LOGITS_COLUMN
TOPK_LOGITS = "teacher_topk_logits"
TOPK_INDICES = "teacher_topk_indices"
CACHE_COLUMNS = (LOGITS, TOPK_LOGITS, TOPK_INDICES)
UNCHECKED = object()  # `TeacherCache.check(top_k=...)` default: do not compare top_k
# Logit given to the classes outside the top k: probability exactly 0 at any sensible temperature, yet
# finite, so 0 * log(0) terms of the KL stay 0 instead of becoming NaN.
_DROPPED_LOGIT = -1e9


class TeacherCacheError(ValueError):
    """The teacher-logit cache cannot be used."""


class StaleTeacherCacheError(TeacherCacheError):
    """The cache was built from a different teacher, tokenizer, data, max_length or top_k."""


class CorruptTeacherCacheError(TeacherCacheError):
    """The cache folder is unreadable or its contents do not match their recorded digests."""


@dataclass(frozen=True)
class CacheKey:
    """What a cache was built from. `None` components are unknown (not checked).

    `tokenizer` is the tokenizer of the cached inputs (the teacher's); `student_tokenizer` is set when the
    student reads another tokenization of the same text (cross-tokenizer distillation) or when the cache holds
    soft labels brought from outside (keyed by the student's tokenized inputs).
    """

    teacher: str
    tokenizer: str | None
    max_length: int | None
    top_k: int | None
    student_tokenizer: str | None = None

    @property
    def fingerprint(self) -> str:
        parts = asdict(self)
        if parts["student_tokenizer"] is None:  # same digest as caches written before the field existed
            del parts["student_tokenizer"]
        return combine(parts)


def cache_key(
    teacher: PreTrainedModel | str | os.PathLike | list,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    top_k: int | None = None,
    student_tokenizer: PreTrainedTokenizerBase | None = None,
) -> CacheKey:
    return CacheKey(
        teacher=teachers_fingerprint(teacher),
        tokenizer=tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        max_length=max_length,
        top_k=top_k,
        student_tokenizer=tokenizer_fingerprint(student_tokenizer) if student_tokenizer is not None else None,
    )


def teacher_cache_fingerprint(
    teacher: PreTrainedModel | str | os.PathLike | list,
    tokenizer: PreTrainedTokenizerBase | None,
    datasets: dict[str, Dataset],
    max_length: int | None = None,
    top_k: int | None = None,
) -> str:
    """One digest of everything a cache depends on (teacher weights, tokenizer, each split, max_length, k)."""
    key = cache_key(teacher, tokenizer, max_length, top_k)
    data = {name: inputs_fingerprint(dataset) for name, dataset in datasets.items()}
    return combine({"key": key.fingerprint, "data": data})


# ------------------------------------------------------------------------------------------------ helpers


def file_digests(folder: Path) -> dict[str, str]:
    """{file name: SHA-256} of every file in a split folder (Arrow shards, dataset_info.json, state.json)."""
    digests = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[path.name] = digest.hexdigest()
    return digests


def metadata_digest(metadata: dict) -> str:
    """SHA-256 of the metadata itself (every field but `integrity`), so an edited fingerprint is caught."""
    body = {k: v for k, v in metadata.items() if k != "integrity"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _content_digest(split: Dataset) -> str:
    digest = hashlib.sha256()
    for column in sorted(c for c in split.column_names if c in CACHE_COLUMNS):
        values = split.with_format("numpy")[column]
        digest.update(column.encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def _parameter_count(folder: Path) -> int:
    """Number of weights stored in a model folder's safetensors files (read from their headers)."""
    from ..runs.model_files import open_weights

    total = 0
    for path in folder.glob("*.safetensors"):
        with open_weights(path, "teacher") as handle:
            total += sum(int(np.prod(handle.get_slice(name).get_shape())) for name in handle.keys())  # noqa: SIM118
    return total


def _teacher_summary(teacher: PreTrainedModel | str | os.PathLike) -> dict:
    """Name, task, labels and shape of the teacher, recorded in the cache (and used for model cards)."""
    from transformers import AutoConfig

    if isinstance(teacher, PreTrainedModel):
        config, name = teacher.config, teacher.config._name_or_path or type(teacher).__name__
        task, parameters = model_task([type(teacher).__name__]) or "unknown", teacher.num_parameters()
    else:
        config, name = AutoConfig.from_pretrained(teacher), str(teacher)
        task, parameters = (
            model_task(config.architectures or []) or "unknown",
            _parameter_count(Path(teacher)),
        )
    return {
        "name": name,
        "task": task,
        "num_labels": config.num_labels,
        "label_names": label_names_of(config),  # the logits' class order (the trainer aligns it by name)
        "problem_type": config.problem_type,
        "shape": {
            "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "heads": config.num_attention_heads,
            "parameters": parameters,
        },
    }


def _check_supported(summary: dict, top_k: int | None) -> None:
    if summary["task"] == "token-classification":
        raise TeacherCacheError(
            "The teacher-logit cache supports sequence classification only; this teacher classifies tokens "
            "(one distribution per token). Distill it with the live teacher: unset teacher_cache."
        )
    if summary["task"] != "sequence-classification":
        raise TeacherCacheError(
            f"Cannot tell what task the teacher {summary['name']} solves (config.architectures lacks a "
            "*ForSequenceClassification class); the cache supports sequence classification only."
        )
    if top_k is not None:
        if summary["problem_type"] in ("multi_label_classification", "regression"):
            raise TeacherCacheError(
                f"teacher_cache_top_k needs a single-label classifier; this teacher does "
                f"{summary['problem_type']}. Unset teacher_cache_top_k to cache all logits."
            )
        if not 1 <= top_k < summary["num_labels"]:
            raise TeacherCacheError(
                f"teacher_cache_top_k={top_k} must be between 1 and the number of labels - 1 "
                f"({summary['num_labels'] - 1}); unset it to cache all {summary['num_labels']} logits."
            )


def _split_dataset(logits: np.ndarray, top_k: int | None) -> tuple[Dataset, dict | None]:
    num_labels = logits.shape[-1]
    if top_k is None:
        features = Features({LOGITS: Sequence(Value("float32"), length=num_labels)})
        return Dataset.from_dict({LOGITS: logits}, features=features), None
    indices = np.argsort(-logits, axis=-1, kind="stable")[:, :top_k]
    values = np.take_along_axis(logits, indices, axis=-1)
    probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    mass = np.take_along_axis(probabilities, indices, axis=-1).sum(-1)
    features = Features(
        {
            TOPK_LOGITS: Sequence(Value("float32"), length=top_k),
            TOPK_INDICES: Sequence(Value("int32"), length=top_k),
        }
    )
    dataset = Dataset.from_dict(
        {TOPK_LOGITS: values, TOPK_INDICES: indices.astype(np.int32)}, features=features
    )
    return dataset, {"mean": float(mass.mean()), "min": float(mass.min())}
