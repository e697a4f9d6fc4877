"""Teacher logits in the training loop: attach a (possibly new) cache to the trainer's datasets, and take
the cached logits back out of a collated batch."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..runs.artifacts import TEACHER_CACHE_METADATA_FILE
from .build import build_teacher_cache
from .format import _DROPPED_LOGIT, LOGITS, TOPK_INDICES, TOPK_LOGITS, TeacherCacheError
from .load import TeacherCache

logger = logging.getLogger(__name__)


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


def attach_teacher_cache(
    args, teacher, tokenizer, train_dataset, eval_dataset, teacher_inputs=None, onnx_export=None
):
    """Load (or build, when missing) `args.teacher_cache`, check it, and add its logits to the datasets.

    `teacher_inputs`: a `TeacherInputsCollator` when the teacher reads its own tokenization of the text
    (cross-tokenizer distillation); the cache then holds the teacher's logits over that tokenization and is
    keyed by both tokenizers. `onnx_export` builds a missing cache with `args.teacher_cache_backend` onnx /
    onnx-int8 (`distilnlp.onnx.export_teacher`). Returns (train_dataset, eval_dataset, the cache's metadata with its path).
    Evaluation sets the cache does not hold are left for the live teacher (an error when there is none).
    """
    path = Path(args.teacher_cache)
    named_eval = eval_dataset if isinstance(eval_dataset, dict) else {"validation": eval_dataset}
    datasets = {"train": train_dataset} | {n: d for n, d in named_eval.items() if d is not None}
    if not all(isinstance(d, Dataset) for d in datasets.values()):
        raise TypeError("teacher_cache needs `datasets.Dataset` train and eval datasets (tokenized).")
    tokenizer = tokenizer if isinstance(tokenizer, PreTrainedTokenizerBase) else None
    student_tokenizer, max_length = None, None
    if teacher_inputs is not None:  # the cache keys on the teacher's tokenization of the same rows
        student_tokenizer, tokenizer = tokenizer, teacher_inputs.teacher_tokenizer
        max_length = teacher_inputs.teacher_max_length
        references = {name: teacher_inputs.tokenize_for_teacher(d) for name, d in datasets.items()}
    else:
        references = datasets
    # Every process takes part in a build (each runs the teacher over its slice of the rows), so none may
    # wait for another to build it first; all see the same folder here, as none can finish a build alone.
    if not (path / TEACHER_CACHE_METADATA_FILE).exists():
        if teacher is None:
            raise TeacherCacheError(
                f"teacher_cache={str(path)!r} does not exist yet and there is no teacher_model to build "
                "it from: pass teacher_model, or build it first with `distilnlp cache-teacher`."
            )
        build_teacher_cache(
            path,
            teacher,
            references,
            tokenizer=tokenizer,
            max_length=max_length,
            backend=args.teacher_cache_backend,
            top_k=args.teacher_cache_top_k,
            batch_size=args.teacher_cache_batch_size,
            student_tokenizer=student_tokenizer,
            onnx_export=onnx_export,
        )
    cache = TeacherCache.load(path)
    cache.check(teacher, tokenizer, max_length, args.teacher_cache_top_k, student_tokenizer)
    info = {"path": str(path), **cache.metadata}
    train_dataset = cache.attach(train_dataset, reference=references["train"])
    attached = {}
    for name, dataset in named_eval.items():
        reference = references.get(name)
        if dataset is not None and cache.split_for(reference) is not None:
            dataset = cache.attach(dataset, reference=reference)
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
