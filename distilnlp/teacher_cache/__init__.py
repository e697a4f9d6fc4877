"""Cached teacher logits: build once (`build`), load and check (`load`), use in training (`attach`).

See `format` for the folder layout, the key that decides when a cache is stale, and the top-k approximation.
"""

from ..runs.artifacts import TEACHER_CACHE_METADATA_FILE as METADATA_FILE
from .attach import attach_teacher_cache, has_cached_logits, pop_cached_logits
from .build import build_teacher_cache
from .format import (
    CACHE_COLUMNS,
    LOGITS,
    TOPK_INDICES,
    TOPK_LOGITS,
    CacheKey,
    CorruptTeacherCacheError,
    StaleTeacherCacheError,
    TeacherCacheError,
    cache_key,
    teacher_cache_fingerprint,
)
from .load import TeacherCache, attach_teacher_logits
from .run_teacher import BACKENDS, TeacherRun, compute_teacher_logits
from .soft_labels import build_soft_label_cache

__all__ = [
    "BACKENDS",
    "CACHE_COLUMNS",
    "LOGITS",
    "METADATA_FILE",
    "TOPK_INDICES",
    "TOPK_LOGITS",
    "CacheKey",
    "CorruptTeacherCacheError",
    "StaleTeacherCacheError",
    "TeacherCache",
    "TeacherCacheError",
    "TeacherRun",
    "attach_teacher_cache",
    "attach_teacher_logits",
    "build_soft_label_cache",
    "build_teacher_cache",
    "cache_key",
    "compute_teacher_logits",
    "has_cached_logits",
    "pop_cached_logits",
    "teacher_cache_fingerprint",
]
