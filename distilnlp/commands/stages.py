"""The two training stages a user runs: fine-tune a teacher, then distill a student from it."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ..artifacts import DISTILL_RESULTS_FILE, FINETUNE_RESULTS_FILE
from ..checkpoints import ResumePlan, RunSettingsCallback, plan_resume, run_settings
from ..data import (
    DataArguments,
    add_transfer_rows,
    label_names,
    labeled_subset,
    load_task_data,
    load_transfer_texts,
    tokenize_task_data,
    tokenize_transfer,
)
from ..metrics import compute_classification_metrics
from ..model_files import load_model_folder
from ..run_lock import output_dir_lock
from ..student import create_random_student, create_student, relabel_student
from ..teacher_cache.fingerprint import tokenizer_fingerprint
from ..teachers import as_teacher_list, feature_teacher_of, label_names_of, label_permutation
from ..trainer import DistillationTrainer
from ..training_args import DistillationTrainingArguments
from .arguments import DistillArguments, FinetuneArguments, resolve_model_path  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ helpers


TEXT_SPLITS = ("train", "validation")  # the splits that keep their text with `keep_text`


def prepare_data(
    data_args: DataArguments, tokenizer, with_transfer: bool = False, keep_text: bool = False
) -> tuple:
    """(raw splits, tokenized splits, label names); with `with_transfer`, the tokenized train split also
    holds the rows of `data_args.transfer_dataset` (label -100) after the labelled ones; with `keep_text`,
    the train and validation splits keep each row's text (transfer rows' too) in `data_args.text_column`."""
    raw = load_task_data(data_args)
    names = label_names(raw)
    if len(names) < 2:  # num_labels=1 would silently make a regression head with accuracy 1.0
        raise ValueError(
            f"The label column {data_args.label_column!r} of {data_args.dataset} holds one class ({names}): "
            "a classifier needs at least two; check label_column and the data."
        )
    tokenized = tokenize_task_data(raw, tokenizer, data_args)
    text = data_args.text_column
    for split in TEXT_SPLITS if keep_text else ():
        tokenized[split] = tokenized[split].add_column(text, raw[split][text])
    if with_transfer and data_args.transfer_dataset:
        texts = load_transfer_texts(
            data_args.transfer_dataset,
            data_args.transfer_text_column,
            data_args.transfer_window,
            data_args.max_transfer_samples,
            data_args.split_seed,
        )
        labels_feature = tokenized["train"].features["labels"]
        rows = tokenize_transfer(
            texts, tokenizer, data_args.max_length, labels_feature, text if keep_text else None
        )
        tokenized["train"] = add_transfer_rows(tokenized["train"], rows)
    return raw, tokenized, names


def task_trainer_kwargs(tokenized, tokenizer) -> dict:
    """What every training stage gives its Trainer: train/validation splits, padding, metrics."""
    return dict(
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_classification_metrics,
    )


def evaluate_on(model: PreTrainedModel, dataset, tokenizer, args: TrainingArguments, prefix: str) -> dict:
    """Accuracy / macro-F1 / loss of `model` on `dataset` with a plain `Trainer` (same batching and device)."""
    eval_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        report_to="none",
        use_cpu=args.use_cpu,
        disable_tqdm=args.disable_tqdm,
        dataloader_pin_memory=args.dataloader_pin_memory,  # off on CPU (StageTrainingArguments): no warning
    )
    trainer = Trainer(
        model=model,
        args=eval_args,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_classification_metrics,
    )
    return trainer.evaluate(dataset, metric_key_prefix=prefix)


# Data settings recorded in the results, so `distilnlp export` can calibrate on the model's own task data.
RECORDED_DATA_FIELDS = (
    "dataset",
    "text_column",
    "label_column",
    "validation_size",
    "test_size",
    "split_seed",
)


def data_record(data_args: DataArguments) -> dict:
    return {name: value for name, value in asdict(data_args).items() if name in RECORDED_DATA_FIELDS}


def start_stage(args: TrainingArguments, results_file: str) -> tuple[ResumePlan, dict]:
    """(the resume plan, the settings to record) of a stage about to train into `args.output_dir`."""
    settings = run_settings(args)
    return plan_resume(args, settings, results_file), settings


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


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
    tokenized["train"] = labeled_subset(tokenized["train"])
    model = load_model_folder(
        AutoModelForSequenceClassification,
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
                AutoModelForSequenceClassification,
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
    for folder, teacher in zip(distill_args.teachers, teachers, strict=True):
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
        return load_student(distill_args, dict(enumerate(names)), attn_implementation)
    student = _student_from_teacher(distill_args, teacher, attn_implementation)
    relabel_student(student, names, label_permutation(teacher.config, names))
    return student


def _student_from_teacher(distill_args: DistillArguments, teacher, attn_implementation: str | None):
    depth = distill_args.student_layers or max(1, teacher.config.num_hidden_layers // 2)
    if distill_args.student_hidden_size or distill_args.student_num_attention_heads:
        return create_random_student(
            teacher,
            num_layers=depth,
            hidden_size=distill_args.student_hidden_size,
            num_attention_heads=distill_args.student_num_attention_heads,
            intermediate_size=distill_args.student_intermediate_size,
            attn_implementation=attn_implementation,
        )
    selection = distill_args.layer_selection
    return create_student(
        teacher,
        None if isinstance(selection, list) else depth,
        selection,
        attn_implementation=attn_implementation,
    )


def load_student(distill_args: DistillArguments, id2label: dict, attn_implementation: str | None):
    """The pretrained student of `distill_args.student`, with a head for the task's labels (new if needed)."""
    return load_model_folder(
        AutoModelForSequenceClassification,
        resolve_model_path(distill_args.student),
        "student",
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={name: int(i) for i, name in id2label.items()},
        # A pretrained encoder (e.g. the packaged MiniLM) gets a new head, as in `finetune`.
        ignore_mismatched_sizes=True,
        trust_remote_code=distill_args.trust_remote_code,
        attn_implementation=attn_implementation,
    )


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
    from .any_teacher import distill_from_soft_labels, student_data

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
    for index, other in enumerate(trainer.teachers):
        prefix = "teacher_test" if other is trainer.teacher_model else f"teacher{index}_test"
        scores |= evaluate_on(other, in_labels_of(other, tokenized["test"], names), tokenizer, args, prefix)
    results = {
        **scores,
        **evaluate_on(student, student_side.tokenized["test"], student_side.tokenizer, args, "student_test"),
        **trainer.distillation_summary(),
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


def train_student(student, teacher, args, plan: ResumePlan, run_settings, trainer_kwargs: dict):
    """A `DistillationTrainer` trained from the plan's checkpoint (changed settings go into the card)."""
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, callbacks=[run_settings], **trainer_kwargs
    )
    trainer.changed_settings = plan.changes  # recorded in the model card
    trainer.train(resume_from_checkpoint=plan.checkpoint)
    trainer.save_state()
    return trainer


def save_student(trainer: DistillationTrainer, args, results: dict) -> dict:
    """Save the student with its model card (test scores of `results`) and results JSON; push if asked."""
    trainer.model_card_scores = {
        f"{role} {metric} (test)": results[f"{role}_test_{key}"]
        for role in ("teacher", "student")
        for metric, key in (("accuracy", "accuracy"), ("macro-F1", "f1"))
        if f"{role}_test_{key}" in results
    }
    trainer.save_model()
    trainer.create_model_card()
    if trainer.is_world_process_zero():
        write_json(Path(args.output_dir) / DISTILL_RESULTS_FILE, results)
    if args.push_to_hub:
        trainer.push_to_hub()
    return results


__all__ = ["DistillArguments", "FinetuneArguments", "distill", "finetune"]
