"""The teacher's sentence embeddings of the distillation texts, computed once and reused.

    embeddings = cached_teacher_embeddings(teacher, texts, "cache/", fp16=True)   # (N, D) float32

The cache file `teacher-embeddings-<fingerprint[:16]>.safetensors` is keyed by the teacher's weights, its pooling
(mode, normalization, Dense layers, max_seq_length) and the texts themselves (SHA-256 of each, in order), so a
changed teacher or text set never reads a stale file. fp16 storage halves the file (embeddings of unit norm lose
< 1e-3 per dimension); the trainer always reads float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..runs.sentence_folder import describe_pooling, encoder_of
from .fingerprint import combine, weights_fingerprint

logger = logging.getLogger(__name__)

EMBEDDINGS_KEY = "embeddings"


def texts_fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()


def embedding_fingerprint(teacher, texts: Sequence[str]) -> str:
    """SHA-256 of the teacher's encoder weights, every other module's weights, its pooling facts and the texts."""
    heads = {k: v for k, v in teacher.state_dict().items() if not k.startswith("0.")}
    parts = {
        "encoder": weights_fingerprint(encoder_of(teacher)),
        "modules": hashlib.sha256(b"".join(v.float().numpy().tobytes() for v in heads.values())).hexdigest(),
        "pooling": json.dumps(describe_pooling(teacher), sort_keys=True),
        "texts": texts_fingerprint(texts),
    }
    return combine(parts)


def encode_teacher(teacher, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(N, D) float32 embeddings, exactly as `teacher.encode` gives them."""
    with torch.inference_mode():
        return teacher.encode(list(texts), batch_size=batch_size, convert_to_numpy=True).astype(np.float32)


def cached_teacher_embeddings(
    teacher,
    texts: Sequence[str],
    cache_dir: str | os.PathLike | None,
    fp16: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """The teacher's (N, D) float32 embeddings of `texts`, read from `cache_dir` when present, else computed
    (and written there when `cache_dir` is given)."""
    from safetensors.numpy import load_file, save_file

    if cache_dir is None:
        return encode_teacher(teacher, texts, batch_size)
    fingerprint = embedding_fingerprint(teacher, texts)
    path = Path(cache_dir) / f"teacher-embeddings-{fingerprint[:16]}.safetensors"
    if path.is_file():
        stored = load_file(str(path))[EMBEDDINGS_KEY]
        if stored.shape[0] == len(texts):
            logger.info("Teacher embeddings read from %s.", path)
            return stored.astype(np.float32)
    embeddings = encode_teacher(teacher, texts, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".tmp-{os.getpid()}")
    stored = embeddings.astype(np.float16 if fp16 else np.float32)
    save_file(
        {EMBEDDINGS_KEY: stored}, str(partial), metadata={"fingerprint": fingerprint, "rows": str(len(texts))}
    )
    os.replace(partial, path)  # a killed run leaves no half-written cache under the real name
    logger.info("Teacher embeddings of %d texts written to %s.", len(texts), path)
    return stored.astype(np.float32)
