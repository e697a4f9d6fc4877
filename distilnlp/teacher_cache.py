"""A cache of a teacher's logits over tokenized transfer data, so distillation need not run the teacher.

Layout of a cache folder (Arrow via `datasets.save_to_disk`; no pickle anywhere):

    distilnlp_teacher_cache.json   key, per-split row counts and content digests, how it was built
    train/, validation/, ...       one Arrow dataset per split, rows in the split's order

Each split holds `teacher_logits` (C float32 per example), or with `top_k` the k largest logits
`teacher_topk_logits` and their class ids `teacher_topk_indices`.

**Key.** A cache is reused only when the teacher's weights, the tokenizer, the tokenized inputs of the split
(ids, masks and order; labels excluded) and, when known, `max_length` and `top_k` all match what it was built
from (`distilnlp.fingerprint`). Otherwise `StaleTeacherCacheError` says which part changed. A folder that
cannot be read, or whose logits no longer match the digests written at build time, raises
`CorruptTeacherCacheError`.

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
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Features, Sequence, Value, concatenate_datasets, load_from_disk
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .fingerprint import combine, inputs_fingerprint, tokenizer_fingerprint, weights_fingerprint
from .teacher_logits import compute_teacher_logits

logger = logging.getLogger(__name__)

METADATA_FILE = "distilnlp_teacher_cache.json"
FORMAT_VERSION = 1
LOGITS = "teacher_logits"
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
    """What a cache was built from. `None` components are unknown (not checked)."""

    teacher: str
    tokenizer: str | None
    max_length: int | None
    top_k: int | None

    @property
    def fingerprint(self) -> str:
        return combine(asdict(self))


def cache_key(
    teacher: PreTrainedModel | str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    top_k: int | None = None,
) -> CacheKey:
    return CacheKey(
        teacher=weights_fingerprint(teacher),
        tokenizer=tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        max_length=max_length,
        top_k=top_k,
    )


def teacher_cache_fingerprint(
    teacher: PreTrainedModel | str | os.PathLike,
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


def _content_digest(split: Dataset) -> str:
    digest = hashlib.sha256()
    for column in sorted(c for c in split.column_names if c in CACHE_COLUMNS):
        values = split.with_format("numpy")[column]
        digest.update(column.encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def _task_of(architectures: list[str]) -> str:
    for task, suffix in (
        ("sequence-classification", "ForSequenceClassification"),
        ("token-classification", "ForTokenClassification"),
    ):
        if any(a.endswith(suffix) for a in architectures):
            return task
    return "unknown"


def _parameter_count(folder: Path) -> int:
    """Number of weights stored in a model folder's safetensors files (read from their headers)."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            total += sum(int(np.prod(handle.get_slice(name).get_shape())) for name in handle.keys())  # noqa: SIM118
    return total


def _teacher_summary(teacher: PreTrainedModel | str | os.PathLike) -> dict:
    """Name, task, labels and shape of the teacher, recorded in the cache (and used for model cards)."""
    from transformers import AutoConfig

    if isinstance(teacher, PreTrainedModel):
        config, name = teacher.config, teacher.config._name_or_path or type(teacher).__name__
        task, parameters = _task_of([type(teacher).__name__]), teacher.num_parameters()
    else:
        config, name = AutoConfig.from_pretrained(teacher), str(teacher)
        task, parameters = _task_of(config.architectures or []), _parameter_count(Path(teacher))
    return {
        "name": name,
        "task": task,
        "num_labels": config.num_labels,
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


def _versions() -> dict[str, str]:
    import datasets
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


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
) -> TeacherCache:
    """Run `teacher` over each tokenized split of `datasets` and store its logits in `output_dir`.

    `teacher` is a sequence-classification model or its folder. The folder is written whole into a
    temporary sibling and then moved into place, so an interrupted build never leaves a cache that loads.
    An existing `output_dir` is replaced only if it is a teacher cache (or empty).
    """
    output_dir = Path(output_dir)
    summary = _teacher_summary(teacher)
    _check_supported(summary, top_k)
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / METADATA_FILE).exists():
        raise TeacherCacheError(
            f"{output_dir} exists and is not a teacher cache (no {METADATA_FILE}); choose another folder."
        )
    key = cache_key(teacher, tokenizer, max_length, top_k)
    runs = compute_teacher_logits(teacher, datasets, backend=backend, batch_size=batch_size)

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
            "seconds": round(runs[name].seconds, 3),
            "fp32_reruns": runs[name].fp32_reruns,
            "topk_mass": mass,
        }
    metadata = {
        "format_version": FORMAT_VERSION,
        "fingerprint": combine({"key": key.fingerprint, "data": {n: s["inputs"] for n, s in splits.items()}}),
        "key": asdict(key),
        "splits": splits,
        "num_labels": int(next(iter(runs.values())).logits.shape[-1]),
        "backend": backend,
        "teacher": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
    }
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output_dir)
    logger.info(f"Teacher cache written to {output_dir} (fingerprint {metadata['fingerprint'][:12]})")
    return TeacherCache(output_dir, metadata)


# -------------------------------------------------------------------------------------------------- load


class TeacherCache:
    """A cache folder: its metadata, checks against a teacher / tokenizer, and its splits' logits."""

    def __init__(self, path: Path, metadata: dict):
        self.path = Path(path)
        self.metadata = metadata

    @classmethod
    def load(cls, path: str | os.PathLike) -> TeacherCache:
        path = Path(path)
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise CorruptTeacherCacheError(
                f"{path} is not a teacher cache ({METADATA_FILE} missing). Build it with `distilnlp "
                "cache-teacher` or point teacher_cache at an empty folder to build it when training."
            )
        try:
            metadata = json.loads(meta_path.read_text())
            _ = metadata["key"]["teacher"], metadata["splits"], metadata["num_labels"]
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptTeacherCacheError(
                f"The teacher cache {path} is corrupted: {METADATA_FILE} cannot be read ({error}). Delete the "
                "folder and build it again."
            ) from error
        if metadata.get("format_version") != FORMAT_VERSION:
            raise StaleTeacherCacheError(
                f"The teacher cache {path} has format version {metadata.get('format_version')}, this distilnlp "
                f"reads version {FORMAT_VERSION}. Delete the folder and build it again."
            )
        return cls(path, metadata)

    @property
    def key(self) -> CacheKey:
        return CacheKey(**self.metadata["key"])

    @property
    def fingerprint(self) -> str:
        return self.metadata["fingerprint"]

    @property
    def top_k(self) -> int | None:
        return self.key.top_k

    @property
    def num_labels(self) -> int:
        return self.metadata["num_labels"]

    def check(
        self,
        teacher: PreTrainedModel | str | os.PathLike | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_length: int | None = None,
        top_k: int | None | object = UNCHECKED,
    ) -> None:
        """Raise `StaleTeacherCacheError` naming every given component that differs from the cache's.

        Components left out (None; `UNCHECKED` for top_k, where None means "all logits") are not checked.
        """
        key, changed = self.key, []
        if teacher is not None and weights_fingerprint(teacher) != key.teacher:
            changed.append("the teacher's weights")
        if (
            tokenizer is not None
            and key.tokenizer is not None
            and tokenizer_fingerprint(tokenizer) != key.tokenizer
        ):
            changed.append("the tokenizer")
        if max_length is not None and key.max_length is not None and max_length != key.max_length:
            changed.append(f"max_length ({key.max_length} in the cache, {max_length} now)")
        if top_k is not UNCHECKED and top_k != key.top_k:
            changed.append(f"top_k ({key.top_k} in the cache, {top_k} now)")
        if changed:
            raise StaleTeacherCacheError(
                f"The teacher cache {self.path} is stale: {', '.join(changed)} changed since it was built. "
                "Rebuild it (`distilnlp cache-teacher ...` replaces it) or point teacher_cache at a new folder."
            )

    def split_for(self, dataset: Dataset) -> str | None:
        """Name of the cached split built from exactly these tokenized inputs, or None."""
        digest = inputs_fingerprint(dataset)
        return next((n for n, s in self.metadata["splits"].items() if s["inputs"] == digest), None)

    def logits(self, split: str) -> Dataset:
        """The cached columns of `split`, checked against the digests recorded at build time."""
        record = self.metadata["splits"].get(split)
        if record is None:
            raise TeacherCacheError(
                f"The teacher cache {self.path} has no split {split!r} ({list(self.metadata['splits'])})."
            )
        try:
            data = load_from_disk(str(self.path / split))
            intact = len(data) == record["rows"] and _content_digest(data) == record["content"]
        except Exception as error:  # pyarrow / datasets raise many types for truncated or missing files
            raise CorruptTeacherCacheError(
                f"The teacher cache {self.path} is corrupted: split {split!r} cannot be read "
                f"({type(error).__name__}: {error}). Delete the folder and build it again."
            ) from error
        if not intact:
            raise CorruptTeacherCacheError(
                f"The teacher cache {self.path} is corrupted: the logits of split {split!r} do not match the "
                "digest recorded when it was built. Delete the folder and build it again."
            )
        return data

    def attach(self, dataset: Dataset, split: str | None = None) -> Dataset:
        """`dataset` plus the cached columns of the split built from the same inputs (checked)."""
        split = split or self.split_for(dataset)
        if split is None:
            held = ", ".join(f"{n} ({s['rows']} rows)" for n, s in self.metadata["splits"].items())
            raise StaleTeacherCacheError(
                f"The teacher cache {self.path} holds no split built from these {len(dataset)} examples: the "
                "data, the tokenizer or max_length changed since it was built (it has "
                f"{held}). Rebuild it."
            )
        if self.metadata["splits"][split]["inputs"] != inputs_fingerprint(dataset):
            raise StaleTeacherCacheError(
                f"Split {split!r} of the teacher cache {self.path} was built from other examples than these."
            )
        clash = [c for c in CACHE_COLUMNS if c in dataset.column_names]
        return concatenate_datasets([dataset.remove_columns(clash), self.logits(split)], axis=1)


def attach_teacher_logits(
    dataset: Dataset,
    cache_dir: str | os.PathLike,
    *,
    teacher: PreTrainedModel | str | os.PathLike | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
) -> Dataset:
    """Load the cache in `cache_dir`, check it against what is given, and add its logits to `dataset`."""
    cache = TeacherCache.load(cache_dir)
    cache.check(teacher, tokenizer, max_length)
    return cache.attach(dataset)


# ---------------------------------------------------------------------------------------- batch → logits


def has_cached_logits(columns) -> bool:
    return LOGITS in columns or TOPK_LOGITS in columns


def pop_cached_logits(inputs: dict, num_labels: int) -> torch.Tensor | None:
    """Remove the cache columns from a collated batch and return the teacher logits, (B, C) float.

    Top-k entries are scattered into a (B, C) tensor whose other classes get a logit of -1e9 (probability 0:
    the soft targets are renormalised over the top k).
    """
    full = inputs.pop(LOGITS, None)
    values, indices = inputs.pop(TOPK_LOGITS, None), inputs.pop(TOPK_INDICES, None)
    if full is not None:
        return full.float()
    if values is None:
        return None
    logits = values.new_full((values.shape[0], num_labels), _DROPPED_LOGIT, dtype=torch.float32)
    return logits.scatter(1, indices.long(), values.float())


def attach_teacher_cache(args, teacher, tokenizer, train_dataset, eval_dataset):
    """Load (or build, when missing) `args.teacher_cache`, check it, and add its logits to the datasets.

    Returns (train_dataset, eval_dataset, the cache's metadata with its path). Evaluation sets the cache does
    not hold are left for the live teacher (an error when there is none).
    """
    path = Path(args.teacher_cache)
    named_eval = eval_dataset if isinstance(eval_dataset, dict) else {"validation": eval_dataset}
    datasets = {"train": train_dataset} | {n: d for n, d in named_eval.items() if d is not None}
    if not all(isinstance(d, Dataset) for d in datasets.values()):
        raise TypeError("teacher_cache needs `datasets.Dataset` train and eval datasets (tokenized).")
    tokenizer = tokenizer if isinstance(tokenizer, PreTrainedTokenizerBase) else None
    with args.main_process_first(desc="teacher cache"):
        if not (path / METADATA_FILE).exists():
            if teacher is None:
                raise TeacherCacheError(
                    f"teacher_cache={str(path)!r} does not exist yet and there is no teacher_model to build "
                    "it from: pass teacher_model, or build it first with `distilnlp cache-teacher`."
                )
            build_teacher_cache(
                path,
                teacher,
                datasets,
                tokenizer=tokenizer,
                backend=args.teacher_cache_backend,
                top_k=args.teacher_cache_top_k,
                batch_size=args.teacher_cache_batch_size,
            )
        cache = TeacherCache.load(path)
    cache.check(teacher, tokenizer, top_k=args.teacher_cache_top_k)
    info = {"path": str(path), **cache.metadata}
    train_dataset = cache.attach(train_dataset)
    attached = {}
    for name, dataset in named_eval.items():
        if dataset is not None and cache.split_for(dataset) is not None:
            dataset = cache.attach(dataset)
        elif dataset is not None:
            if teacher is None:
                raise TeacherCacheError(
                    f"The evaluation set {name!r} is not in the teacher cache {path} and there is no "
                    "teacher_model to run on it: build the cache over it too, or pass teacher_model."
                )
            logger.info(f"Evaluation set {name!r} is not in the teacher cache; the live teacher scores it.")
        attached[name] = dataset
    eval_dataset = attached if isinstance(eval_dataset, dict) else attached["validation"]
    return train_dataset, eval_dataset, info
