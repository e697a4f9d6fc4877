"""`distilnlp distill` with any teacher: a teacher whose tokenizer differs from the student's, or soft labels
brought from outside in a file (no teacher model at all)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..data import DataArguments, read_soft_labels
from ..data.teacher_inputs import TeacherInputsCollator
from ..data.tokenize import check_max_length
from ..distill.arguments import DistillationTrainingArguments
from ..runs.artifacts import SOFT_LABEL_CACHE_DIR
from ..runs.checkpoints import ResumePlan, RunSettingsCallback
from ..teacher_cache import build_soft_label_cache
from ..teacher_cache.fingerprint import tokenizer_fingerprint, tokenizers_differ
from .arguments import DistillArguments, resolve_model_path
from .steps import (
    data_record,
    evaluate_on,
    load_student,
    prepare_data,
    save_student,
    task_trainer_kwargs,
    train_student,
)

logger = logging.getLogger(__name__)

CACHED_SPLITS = ("train", "validation")


@dataclass
class StudentData:
    """What the student reads: its tokenizer, its tokenized splits, and the trainer's data arguments."""

    tokenizer: PreTrainedTokenizerBase
    tokenized: DatasetDict
    trainer_kwargs: dict
    cross_tokenizer: bool


def student_data(
    distill_args: DistillArguments,
    data_args: DataArguments,
    teacher_tokenizer: PreTrainedTokenizerBase,
    teacher_tokenized: DatasetDict,
) -> StudentData:
    """The teacher's tokenization when the student shares its tokenizer; else the student's own, with the text
    kept for a `TeacherInputsCollator` (chosen by comparing the two tokenizers' content fingerprints)."""
    same = StudentData(
        teacher_tokenizer,
        teacher_tokenized,
        task_trainer_kwargs(teacher_tokenized, teacher_tokenizer),
        cross_tokenizer=False,
    )
    if not distill_args.student:
        return same
    student_tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(distill_args.student), trust_remote_code=distill_args.trust_remote_code
    )
    teacher_print = tokenizer_fingerprint(teacher_tokenizer)[:12]
    if not tokenizers_differ(teacher_tokenizer, student_tokenizer):
        logger.info(
            f"Teacher and student share a tokenizer (fingerprint {teacher_print}): both read the same token "
            "ids, every loss is available."
        )
        return same
    teacher_max_length = distill_args.teacher_max_length or data_args.max_length
    logger.info(
        f"Cross-tokenizer distillation: the teacher's tokenizer ({type(teacher_tokenizer).__name__}, "
        f"{len(teacher_tokenizer)} tokens, fingerprint {teacher_print}) differs from the student's "
        f"({type(student_tokenizer).__name__}, {len(student_tokenizer)} tokens, fingerprint "
        f"{tokenizer_fingerprint(student_tokenizer)[:12]}). Each model reads its own tokenization of the text "
        f"(teacher max_length {teacher_max_length}, student {data_args.max_length}); logit losses only."
    )
    check_max_length(teacher_tokenizer, teacher_max_length, "teacher_max_length")
    # The same rows as the teacher's tokenization (transfer rows included), with their text: the teacher
    # tokenizes it itself, batch by batch.
    _, tokenized, _ = prepare_data(data_args, student_tokenizer, with_transfer=True, keep_text=True)
    collator = TeacherInputsCollator(
        student_tokenizer,
        teacher_tokenizer,
        text_column=data_args.text_column,
        max_length=data_args.max_length,
        teacher_max_length=teacher_max_length,
    )
    kwargs = task_trainer_kwargs(tokenized, student_tokenizer) | {"data_collator": collator}
    return StudentData(student_tokenizer, tokenized, kwargs, cross_tokenizer=True)


def soft_key_column(key: str, data_args: DataArguments) -> str:
    return data_args.text_column if key == "text" else "id"


def soft_label_keys(key: str, data_args: DataArguments, raw: DatasetDict, tokenized: DatasetDict) -> dict:
    """{split: each row's soft-label key} of the cached splits, transfer rows (after the labelled ones) included:
    texts from the tokenized splits' kept text, ids from the task data."""
    column = soft_key_column(key, data_args)
    if column not in raw["train"].column_names:
        raise ValueError(
            f"The soft labels are keyed by {key!r} but the task data has no {column!r} column "
            f"(columns: {raw['train'].column_names}); key them by text, or add an id column to the data."
        )
    if key == "text":
        return {split: tokenized[split][column] for split in CACHED_SPLITS}
    if data_args.transfer_dataset:
        raise ValueError(
            "--transfer_dataset cannot be used with --soft_labels keyed by id: transfer texts have no id to "
            "match; key the soft labels by text, or unset --transfer_dataset."
        )
    return {split: raw[split][column] for split in CACHED_SPLITS}


def unmatched_rows(key: str, data_args: DataArguments) -> tuple[str, str]:
    """(where soft-label rows were looked for, the likely fix) for a row that matches none of them: texts of a
    transfer set that is not given, cut into windows, or cut short."""
    transfer = data_args.transfer_dataset
    if key != "text":
        return "the task data", ""
    if not transfer:
        return "the task data", (
            "no --transfer_dataset is given; if these rows label transfer texts, pass their file as "
            "--transfer_dataset, else label the task's own texts exactly or drop those rows"
        )
    causes = []
    if data_args.transfer_window:
        causes.append(
            f"--transfer_window {data_args.transfer_window} cuts each transfer text into windows of that many "
            "words (label the windows, or unset transfer_window)"
        )
    if data_args.max_transfer_samples:
        causes.append(
            f"--max_transfer_samples {data_args.max_transfer_samples} keeps only the first "
            f"{data_args.max_transfer_samples} transfer texts"
        )
    fix = "; ".join(causes) or "label the task's or the transfer set's texts exactly"
    return f"the task data or the transfer set {transfer}", f"{fix}; or drop those rows"


def distill_from_soft_labels(
    distill_args: DistillArguments,
    data_args: DataArguments,
    args: DistillationTrainingArguments,
    plan: ResumePlan,
    run_settings: RunSettingsCallback,
) -> dict:
    """Distill `distill_args.student` from the soft labels in `distill_args.soft_labels` (no teacher model).

    The file is validated and written as a teacher cache (`args.teacher_cache`, default
    `<output_dir>/soft-label-cache`) over the student's tokenized train and validation splits (the train split
    with the `transfer_dataset` rows, which text-keyed soft labels may cover).
    """
    if args.teacher_cache_top_k is not None:
        raise ValueError(
            "teacher_cache_top_k does not apply to soft_labels (every class is stored); unset it."
        )
    path = resolve_model_path(distill_args.student)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=distill_args.trust_remote_code)
    raw, tokenized, names = prepare_data(data_args, tokenizer, with_transfer=True, keep_text=True)
    soft = read_soft_labels(
        distill_args.soft_labels,
        names,
        label_map=distill_args.label_map,
        temperature=distill_args.soft_labels_temperature,
        tolerance=distill_args.soft_labels_tolerance,
    )
    keys = soft_label_keys(soft.key, data_args, raw, tokenized)
    tokenized = DatasetDict(
        {n: d.remove_columns(data_args.text_column) if n in keys else d for n, d in tokenized.items()}
    )
    all_keys = [*keys["train"], *keys["validation"], *raw["test"][soft_key_column(soft.key, data_args)]]
    soft.check_all_matched(all_keys, *unmatched_rows(soft.key, data_args))
    cache_dir = args.teacher_cache or str(Path(args.output_dir) / SOFT_LABEL_CACHE_DIR)
    with args.main_process_first(desc="soft-label cache"):
        cache = build_soft_label_cache(
            cache_dir,
            soft,
            {split: tokenized[split] for split in CACHED_SPLITS},
            keys,
            all_keys=all_keys,
            tokenizer=tokenizer,
            max_length=data_args.max_length,
        )
    logger.info(
        f"Soft targets come from {soft.path} ({soft.kind}, {len(soft.keys)} rows, fingerprint "
        f"{soft.fingerprint[:12]}); no teacher model is run."
    )
    args.teacher_cache = cache_dir  # the trainer reads the soft labels as it reads any teacher cache
    student = load_student(distill_args, dict(enumerate(names)), None)
    trainer = train_student(
        student, None, args, plan, run_settings, task_trainer_kwargs(tokenized, tokenizer)
    )
    results = {
        **evaluate_on(student, tokenized["test"], tokenizer, args, "student_test"),
        **trainer.distillation_summary(plan.changes),
        "labels": names,
        "data": data_record(data_args),
        "soft_labels": cache.metadata["soft_labels"],
        "soft_label_coverage": {n: s["covered"] for n, s in cache.metadata["splits"].items()},
    }
    return save_student(trainer, args, results)
