"""`distilnlp cache-teacher`: precompute a teacher's logits over the transfer data, once.

Reads the same recipe as `distilnlp distill` (teacher, data, `teacher_cache`, `teacher_cache_backend`,
`teacher_cache_top_k`) and writes the cache that `distill` then reads instead of running the teacher.
The train split includes the `transfer_dataset` rows, if any. Under `accelerate launch` the processes split
the work: each runs the teacher over its shard of every split (see `build_teacher_cache`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoTokenizer

from ..data import DataArguments, token_label_names
from ..distill.arguments import DistillationTrainingArguments
from ..onnx import export_teacher
from ..runs.model_files import load_model_folder
from ..teacher_cache import METADATA_FILE, TeacherCache, TeacherCacheError, build_teacher_cache
from .arguments import DistillArguments
from .steps import prepare_data

logger = logging.getLogger(__name__)

CACHED_SPLITS = ("train", "validation")


def cache_teacher(
    distill_args: DistillArguments, data_args: DataArguments, args: DistillationTrainingArguments
) -> tuple[TeacherCache, bool]:
    """Build `args.teacher_cache` over the train and validation splits unless an up-to-date one is there.

    Returns the cache and whether it was (re)built. A stale or corrupted cache is rebuilt, with a warning
    saying why.
    """
    if distill_args.soft_labels:
        raise ValueError(
            "soft_labels need no cache-teacher: `distilnlp distill` turns the file into a cache."
        )
    if not args.teacher_cache:
        raise ValueError(
            "Set teacher_cache (the folder to write the teacher's logits to), e.g. --teacher_cache runs/teacher-cache."
        )
    teachers = distill_args.teachers  # several folders: an ensemble, each teacher's logits are cached
    teacher = teachers if len(teachers) > 1 else teachers[0]
    tokenizer = load_model_folder(
        AutoTokenizer, teachers[0], "teacher's tokenizer", trust_remote_code=distill_args.trust_remote_code
    )
    _, tokenized, _ = prepare_data(data_args, tokenizer, with_transfer=True)
    if token_label_names(tokenized["train"]) is not None:
        raise ValueError(
            "cache-teacher stores one logit vector per example; per-token logits of token classification are "
            "not cached yet: distil with the live teacher (no --teacher_cache)."
        )
    splits = {name: tokenized[name] for name in CACHED_SPLITS}
    try:
        if not (Path(args.teacher_cache) / METADATA_FILE).exists():
            raise FileNotFoundError  # nothing to reuse: build it
        cache = TeacherCache.load(args.teacher_cache)
        cache.check(teacher, tokenizer, data_args.max_length, top_k=args.teacher_cache_top_k)
        missing = [n for n, d in splits.items() if cache.split_for(d) != n]
        if not missing:
            for name in splits:
                cache.logits(name)  # digests checked
            logger.info(
                f"Teacher cache {args.teacher_cache} is up to date (fingerprint {cache.fingerprint[:12]})."
            )
            return cache, False
        logger.warning(
            f"Teacher cache {args.teacher_cache} does not hold the current {missing} split(s); rebuilding it."
        )
    except FileNotFoundError:
        logger.info(f"Building the teacher cache {args.teacher_cache} ({args.teacher_cache_backend}).")
    except TeacherCacheError as error:
        logger.warning(f"Rebuilding the teacher cache: {error}")
    # Under `accelerate launch` the build is collective: join the process group as the arguments ask
    # (use_cpu, ddp_backend) rather than let the builder guess it.
    _ = args.world_size
    cache = build_teacher_cache(
        args.teacher_cache,
        teacher,
        splits,
        tokenizer=tokenizer,
        max_length=data_args.max_length,
        backend=args.teacher_cache_backend,
        top_k=args.teacher_cache_top_k,
        batch_size=args.teacher_cache_batch_size,
        onnx_export=export_teacher,
    )
    return cache, True
