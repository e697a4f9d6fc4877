"""What both ways of distilling (`stages.distill` with a teacher, `any_teacher` without one or with another
tokenizer) and the fine-tuning stage share: the task data, the Trainer's data arguments, evaluation, the
student's loading, training and saving. Below `stages` and `any_teacher`, so neither imports the other back."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from transformers import (
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)

from ..benchmark.metrics import compute_classification_metrics, token_metrics
from ..data import (
    TOKEN_TASK,
    DataArguments,
    add_transfer_rows,
    detect_task,
    label_names,
    load_task_data,
    load_token_data,
    load_transfer_texts,
    token_label_names,
    tokenize_task_data,
    tokenize_token_data,
    tokenize_transfer,
)
from ..distill.student import create_random_student, create_student
from ..distill.trainer import DistillationTrainer
from ..runs.artifacts import DISTILL_RESULTS_FILE
from ..runs.checkpoints import ResumePlan
from ..runs.model_files import auto_model_class, load_model_folder
from .arguments import DistillArguments, resolve_model_path

TEXT_SPLITS = ("train", "validation")  # the splits that keep their text with `keep_text`


def prepare_data(
    data_args: DataArguments, tokenizer, with_transfer: bool = False, keep_text: bool = False
) -> tuple:
    """(raw splits, tokenized splits, label names); with `with_transfer`, the tokenized train split also
    holds the rows of `data_args.transfer_dataset` (label -100) after the labelled ones; with `keep_text`,
    the train and validation splits keep each row's text (transfer rows' too) in `data_args.text_column`."""
    if detect_task(data_args) == TOKEN_TASK:
        if keep_text:
            raise ValueError(
                "A teacher and student with different tokenizers cannot distil a token task yet (word pooling is "
                "not built): use a student of the teacher's tokenizer (or none: built from the teacher)."
            )
        raw = load_token_data(data_args)
        names = list(raw["train"].features["tags"].feature.names)
        return raw, tokenize_token_data(raw, tokenizer, data_args), names
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
    """What every training stage gives its Trainer: train/validation splits, padding, metrics (entity F1 for
    token-classification data)."""
    collator, metrics = task_collator_and_metrics(tokenized["train"], tokenizer)
    return dict(
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=metrics,
    )


def task_collator_and_metrics(dataset, tokenizer) -> tuple:
    """(padding collator, compute_metrics) for a tokenized split: per token (labels padded with -100, entity
    scores) when it holds token-classification labels, else per example."""
    names = token_label_names(dataset)
    if names is None:
        return DataCollatorWithPadding(tokenizer), compute_classification_metrics
    return DataCollatorForTokenClassification(tokenizer), token_metrics(names)


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
    collator, metrics = task_collator_and_metrics(dataset, tokenizer)
    trainer = Trainer(model=model, args=eval_args, data_collator=collator, compute_metrics=metrics)
    return trainer.evaluate(dataset, metric_key_prefix=prefix)


# Data settings recorded in the results, so `distilnlp export` can calibrate on the model's own task data.
RECORDED_DATA_FIELDS = (
    "dataset",
    "text_column",
    "label_column",
    "validation_size",
    "test_size",
    "split_seed",
    "task",
    "tokens_column",
    "tags_column",
    "conll_tag_column",
    "tag_scheme",
)


def data_record(data_args: DataArguments) -> dict:
    return {name: value for name, value in asdict(data_args).items() if name in RECORDED_DATA_FIELDS}


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def load_student(
    distill_args: DistillArguments, id2label: dict, attn_implementation: str | None, task: str | None = None
):
    """The pretrained student of `distill_args.student`, with a head for the task's labels (new if needed)."""
    return load_model_folder(
        auto_model_class(task),
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


def train_student(student, teacher, args, plan: ResumePlan, run_settings, trainer_kwargs: dict):
    """A `DistillationTrainer` trained from the plan's checkpoint."""
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, callbacks=[run_settings], **trainer_kwargs
    )
    trainer.train(resume_from_checkpoint=plan.checkpoint)
    trainer.save_state()
    return trainer


def save_student(trainer: DistillationTrainer, args, results: dict) -> dict:
    """Save the student with its model card (test scores of `results`) and results JSON; push if asked."""
    trainer.save_model()
    trainer.create_model_card(results=results)
    if trainer.is_world_process_zero():
        write_json(Path(args.output_dir) / DISTILL_RESULTS_FILE, results)
    if args.push_to_hub:
        trainer.push_to_hub(results=results)  # passed on to create_model_card: the same card
    return results


def student_from_teacher(student_args, teacher, attn_implementation: str | None = None, layers="uniform"):
    """The student a command builds from `teacher`, as `student_args` (`distill`'s or `distill-general`'s
    arguments) describe it: `student_layers` deep (default: half the teacher's); narrower and randomly
    initialised when `student_hidden_size` or `student_num_attention_heads` is set, else a copy of the teacher
    layers `layers` ('uniform', 'first', 'last', or 0-based indices, which also fix the depth)."""
    depth = student_args.student_layers or max(1, teacher.config.num_hidden_layers // 2)
    if student_args.student_hidden_size or student_args.student_num_attention_heads:
        return create_random_student(
            teacher,
            num_layers=depth,
            hidden_size=student_args.student_hidden_size,
            num_attention_heads=student_args.student_num_attention_heads,
            intermediate_size=student_args.student_intermediate_size,
            attn_implementation=attn_implementation,
        )
    fixed_by_layers = isinstance(layers, list)
    return create_student(
        teacher, None if fixed_by_layers else depth, layers, attn_implementation=attn_implementation
    )
