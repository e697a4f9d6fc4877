"""The two training stages a user runs: fine-tune a teacher, then distill a student from it."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ..data import TOKEN_TASK, DataArguments, labeled_subset, token_label_names
from ..distill.arguments import DistillationTrainingArguments, run_settings
from ..distill.student import relabel_student
from ..distill.teachers import as_teacher_list, feature_teacher_of, label_names_of, label_permutation
from ..runs.artifacts import DISTILL_RESULTS_FILE, FINETUNE_RESULTS_FILE
from ..runs.checkpoints import ResumePlan, RunSettingsCallback, plan_resume
from ..runs.lock import output_dir_lock
from ..runs.model_files import auto_model_class, folder_task, load_model_folder, model_task
from ..teacher_cache.fingerprint import tokenizer_fingerprint
from .any_teacher import distill_from_soft_labels, student_data
from .arguments import DistillArguments, FinetuneArguments, resolve_model_path
from .steps import (
    data_record,
    evaluate_on,
    load_student,
    prepare_data,
    save_student,
    student_from_teacher,
    task_trainer_kwargs,
    train_student,
    write_json,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ helpers


def start_stage(args: TrainingArguments, results_file: str) -> tuple[ResumePlan, dict]:
    """(the resume plan, the settings to record) of a stage about to train into `args.output_dir`."""
    settings = run_settings(args)
    return plan_resume(args, settings, results_file), settings


# ------------------------------------------------------------------------------------------------ stages


def finetune(model_args: FinetuneArguments, data_args: DataArguments, args: TrainingArguments) -> dict:
    """Fine-tune a pretrained encoder on the task; saves the teacher and `finetune_results.json`.

    One run per output_dir at a time (a lock); a rerun resumes the newest complete checkpoint, and a finished
    run returns its results without training again.
    """
    with output_dir_lock(args.output_dir):
        plan, settings = start_stage(args, FINETUNE_RESULTS_FILE)
        if plan.finished is not None:
            return plan.finished
        return _finetune(model_args, data_args, args, plan, settings)


def _finetune(model_args, data_args, args, plan: ResumePlan, settings: dict) -> dict:
    # The new classification head is initialised before Trainer seeds anything: seed it here, so `--seed`
    # decides the head as well as the data order (different seeds give the teachers of an ensemble).
    set_seed(args.seed)
    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_model_folder(
        AutoTokenizer, path, "tokenizer", trust_remote_code=model_args.trust_remote_code
    )
    _, tokenized, names = prepare_data(data_args, tokenizer)
    # A plain fine-tune learns from labels alone: rows hidden by labeled_fraction would be all-ignored batches.
    if token_label_names(tokenized["train"]) is None:
        tokenized["train"] = labeled_subset(tokenized["train"])
        task = None
    else:
        task = TOKEN_TASK
    model = load_model_folder(
        auto_model_class(task),
        path,
        "base model",
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        # A new task gets a new head, whatever head the checkpoint had (as in transformers' run_glue).
        ignore_mismatched_sizes=True,
        trust_remote_code=model_args.trust_remote_code,
    )
    trainer = Trainer(
        model=model,
        args=args,
        callbacks=[RunSettingsCallback(settings, plan.changes, plan.checkpoint)],
        **task_trainer_kwargs(tokenized, tokenizer),
    )
    trainer.train(resume_from_checkpoint=plan.checkpoint)
    trainer.save_model()
    trainer.save_state()  # the final trainer_state.json: how a rerun knows this run finished
    results = {
        **trainer.evaluate(tokenized["validation"], metric_key_prefix="validation"),
        **trainer.evaluate(tokenized["test"], metric_key_prefix="test"),
        "model": model_args.model_name_or_path,
        "labels": names,
        "data": data_record(data_args),
    }
    if trainer.is_world_process_zero():
        write_json(Path(args.output_dir) / FINETUNE_RESULTS_FILE, results)
    if args.push_to_hub:
        trainer.push_to_hub()
    return results


def load_teacher_and_data(
    distill_args: DistillArguments, data_args: DataArguments, attn_implementation: str | None
):
    """(teacher, tokenizer, tokenized splits, label names); the teacher must predict the data's labels.

    With several teacher folders, `teacher` is the list of their models; they must share one tokenizer.
    """
    if not distill_args.teacher:
        raise ValueError(
            "This command needs a teacher (--teacher PATH); soft_labels work with `distill` only."
        )
    teachers, tokenizer = [], None
    for folder in distill_args.teachers:
        teachers.append(
            load_model_folder(
                auto_model_class(folder_task(folder)),
                folder,
                "teacher",
                trust_remote_code=distill_args.trust_remote_code,
                attn_implementation=attn_implementation,
            )
        )
        folder_tokenizer = load_model_folder(
            AutoTokenizer, folder, "teacher's tokenizer", trust_remote_code=distill_args.trust_remote_code
        )
        if tokenizer is None:
            tokenizer = folder_tokenizer
        elif tokenizer_fingerprint(folder_tokenizer) != tokenizer_fingerprint(tokenizer):
            raise ValueError(
                f"The teacher {folder} has another tokenizer than {distill_args.teachers[0]}: every teacher "
                "must read the same token ids (fine-tune them all from the same base model)."
            )
    _, tokenized, names = prepare_data(data_args, tokenizer, with_transfer=True)
    token_data = token_label_names(tokenized["train"]) is not None
    for folder, teacher in zip(distill_args.teachers, teachers, strict=True):
        if (folder_task(folder) == TOKEN_TASK) != token_data:
            raise ValueError(
                f"The teacher {folder} is a {folder_task(folder) or 'sequence classifier'} but the data "
                f"{data_args.dataset} is {'token' if token_data else 'sequence'}-level; distil on the teacher's task."
            )
        if teacher.config.num_labels != len(names):
            raise ValueError(
                f"The teacher {folder} has {teacher.config.num_labels} labels but the data has {len(names)} "
                f"({names}); distill on the data the teacher was fine-tuned on."
            )
        label_permutation(teacher.config, names, f"The teacher {folder}")  # other class names: an error now
    return (teachers if len(teachers) > 1 else teachers[0]), tokenizer, tokenized, names


def build_student(
    distill_args: DistillArguments,
    teacher: PreTrainedModel | list[PreTrainedModel],
    attn_implementation: str | None,
    feature_teacher: int = 0,
    names: list[str] | None = None,
):
    """The student: loaded from `distill_args.student`, narrower from a config, or layers of the teacher.

    Of several teachers, the feature teacher (`feature_teacher` index) is the one the student is built from.
    The student predicts the task's classes `names` in their order (default: the teacher's).
    """
    teacher = feature_teacher_of(as_teacher_list(teacher), feature_teacher)
    names = names or label_names_of(teacher.config)
    if distill_args.student:
        task = model_task(teacher.config.architectures or [])
        return load_student(distill_args, dict(enumerate(names)), attn_implementation, task)
    student = student_from_teacher(distill_args, teacher, attn_implementation, distill_args.layer_selection)
    relabel_student(student, names, label_permutation(teacher.config, names))
    return student


def distill(
    distill_args: DistillArguments, data_args: DataArguments, args: DistillationTrainingArguments
) -> dict:
    """Distill a student from a fine-tuned teacher (of any tokenizer) or from a soft-label file; saves the
    student, its model card and results JSON.

    Reruns resume like `finetune`; resuming with other distillation settings is an error unless
    `args.allow_changed_settings` (the model card then records both).
    """
    with output_dir_lock(args.output_dir):
        plan, settings = start_stage(args, DISTILL_RESULTS_FILE)
        if plan.finished is not None:
            return plan.finished
        return _distill(distill_args, data_args, args, plan, settings)


def _distill(distill_args, data_args, args, plan: ResumePlan, settings: dict) -> dict:
    run_settings = RunSettingsCallback(settings, plan.changes, plan.checkpoint)
    if distill_args.soft_labels:
        return distill_from_soft_labels(distill_args, data_args, args, plan, run_settings)
    # Attention losses need attention probabilities, which only the eager implementation returns.
    attn_implementation = "eager" if args.max_weight("attention_weight") > 0 else None
    teacher, tokenizer, tokenized, names = load_teacher_and_data(distill_args, data_args, attn_implementation)
    student = build_student(distill_args, teacher, attn_implementation, args.feature_teacher, names)
    student_side = student_data(distill_args, data_args, tokenizer, tokenized)
    trainer = train_student(student, teacher, args, plan, run_settings, student_side.trainer_kwargs)

    # teacher_test_* is the feature teacher; the others of an ensemble are teacher<i>_test_*.
    scores = {}
    for index, other in enumerate(trainer.teachers if distill_args.evaluate_teacher else []):
        prefix = "teacher_test" if other is trainer.teacher_model else f"teacher{index}_test"
        scores |= evaluate_on(other, in_labels_of(other, tokenized["test"], names), tokenizer, args, prefix)
    results = {
        **scores,
        **evaluate_on(student, student_side.tokenized["test"], student_side.tokenizer, args, "student_test"),
        **trainer.distillation_summary(plan.changes),
        "labels": names,
        "data": data_record(data_args),
        "cross_tokenizer": student_side.cross_tokenizer,
    }
    return save_student(trainer, args, results)


def in_labels_of(teacher: PreTrainedModel, dataset, names: list[str]):
    """`dataset` with its labels renumbered into the teacher's class order, to score a teacher whose
    classes are the task's in another order."""
    order = label_permutation(teacher.config, names)
    if order is None:
        return dataset
    return dataset.map(
        lambda batch: {"labels": [order[y] if y >= 0 else y for y in batch["labels"]]},
        batched=True,
        desc="Teacher's label order",
    )


__all__ = ["build_student", "distill", "finetune", "in_labels_of", "load_teacher_and_data", "start_stage"]
