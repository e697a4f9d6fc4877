"""Load a teacher cache, check it against the teacher / tokenizer / data, and attach its logits to datasets."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_from_disk
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..runs.artifacts import TEACHER_CACHE_METADATA_FILE
from .fingerprint import (
    combine,
    inputs_fingerprint,
    teachers_fingerprint,
    tokenizer_fingerprint,
)
from .format import (
    CACHE_COLUMNS,
    FORMAT_VERSION,
    UNCHECKED,
    CacheKey,
    CorruptTeacherCacheError,
    StaleTeacherCacheError,
    TeacherCacheError,
    _content_digest,
    file_digests,
    metadata_digest,
)

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------- load


class TeacherCache:
    """A cache folder: its metadata, checks against a teacher / tokenizer, and its splits' logits."""

    def __init__(self, path: Path, metadata: dict):
        self.path = Path(path)
        self.metadata = metadata

    @classmethod
    def load(cls, path: str | os.PathLike) -> TeacherCache:
        path = Path(path)
        meta_path = path / TEACHER_CACHE_METADATA_FILE
        if not meta_path.is_file():
            raise CorruptTeacherCacheError(
                f"{path} is not a teacher cache ({TEACHER_CACHE_METADATA_FILE} missing). Build it with `distilnlp "
                "cache-teacher` or point teacher_cache at an empty folder to build it when training."
            )
        try:
            metadata = json.loads(meta_path.read_text())
            _ = metadata["key"]["teacher"], metadata["splits"], metadata["num_labels"]
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptTeacherCacheError(
                f"The teacher cache {path} is corrupted: {TEACHER_CACHE_METADATA_FILE} cannot be read ({error}). Delete the "
                "folder and build it again."
            ) from error
        if metadata.get("format_version") != FORMAT_VERSION:
            raise StaleTeacherCacheError(
                f"The teacher cache {path} has format version {metadata.get('format_version')}, this distilnlp "
                f"reads version {FORMAT_VERSION}. Rebuild it (`distilnlp cache-teacher` replaces it)."
            )
        try:
            key = CacheKey(**metadata["key"]).fingerprint
            fingerprint = combine(
                {"key": key, "data": {n: s["inputs"] for n, s in metadata["splits"].items()}}
            )
        except (KeyError, TypeError, AttributeError):
            fingerprint = None
        if (
            metadata.get("integrity") != metadata_digest(metadata)
            or metadata.get("fingerprint") != fingerprint
        ):
            raise CorruptTeacherCacheError(
                f"The teacher cache {path} is corrupted: {TEACHER_CACHE_METADATA_FILE} was changed after the cache was built "
                "(its digest does not match). Rebuild it (`distilnlp cache-teacher` replaces it)."
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

    @property
    def num_teachers(self) -> int:
        """How many teachers' logits each row holds (K * num_labels values, teacher by teacher)."""
        return self.metadata.get("num_teachers", 1)

    def check(
        self,
        teacher: PreTrainedModel | str | os.PathLike | list | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_length: int | None = None,
        top_k: int | None | object = UNCHECKED,
        student_tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        """Raise `StaleTeacherCacheError` naming every given component that differs from the cache's.

        Components left out (None; `UNCHECKED` for top_k, where None means "all logits") are not checked.
        """
        key, changed = self.key, []
        if teacher is not None and teachers_fingerprint(teacher) != key.teacher:
            changed.append("the teacher's weights" if self.num_teachers == 1 else "the teachers' weights")
        if (
            tokenizer is not None
            and key.tokenizer is not None
            and tokenizer_fingerprint(tokenizer) != key.tokenizer
        ):
            changed.append("the tokenizer")
        if (
            student_tokenizer is not None
            and key.student_tokenizer is not None
            and tokenizer_fingerprint(student_tokenizer) != key.student_tokenizer
        ):
            changed.append("the student's tokenizer")
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
        self.verify_files(split)
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

    def verify_files(self, split: str) -> None:
        """Compare every file of `split` with its SHA-256 from build time, before anything parses it."""
        folder, recorded = self.path / split, self.metadata["splits"][split].get("files") or {}
        found = file_digests(folder) if folder.is_dir() else {}
        for name, digest in recorded.items():
            if found.get(name) != digest:
                state = "is missing" if name not in found else "does not match the SHA-256 digest recorded"
                raise CorruptTeacherCacheError(
                    f"The teacher cache {self.path} is corrupted: {split}/{name} {state} when it was built. "
                    "Rebuild it (`distilnlp cache-teacher` replaces it)."
                )

    def attach(self, dataset: Dataset, split: str | None = None, reference: Dataset | None = None) -> Dataset:
        """`dataset` plus the cached columns of the split built from the same inputs (checked).

        `reference`: the tokenized inputs the cache was built from, when they are not `dataset`'s own (the
        teacher's tokenization of the same rows, in cross-tokenizer distillation); row i of both must be the
        same example.
        """
        reference = dataset if reference is None else reference
        if len(reference) != len(dataset):
            raise ValueError(f"reference has {len(reference)} rows but the dataset {len(dataset)}.")
        split = split or self.split_for(reference)
        if split is None:
            held = ", ".join(f"{n} ({s['rows']} rows)" for n, s in self.metadata["splits"].items())
            raise StaleTeacherCacheError(
                f"The teacher cache {self.path} holds no split built from these {len(dataset)} examples: the "
                "data, the tokenizer or max_length changed since it was built (it has "
                f"{held}). Rebuild it."
            )
        if self.metadata["splits"][split]["inputs"] != inputs_fingerprint(reference):
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
