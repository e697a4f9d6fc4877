"""`distilnlp demo`: the whole job on the bundled default (packaged MiniLM teacher, BBC News).

Every stage writes into one output folder and is skipped when its results already exist, so a demo
that was interrupted picks up where it stopped (and an interrupted training stage resumes from its
last checkpoint).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from .data import DataArguments
from .pipeline import DistillArguments, FinetuneArguments, distill, finetune, write_json
from .training_args import DistillationTrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class DemoArguments:
    """Knobs of the demo; the defaults are the bundled, measured configuration."""

    output_dir: str = field(
        default="distilnlp-demo", metadata={"help": "Folder for every artifact of the demo."}
    )
    student_layers: int = field(
        default=2, metadata={"help": "Student depth (the MiniLM teacher has 6 layers)."}
    )
    teacher_epochs: float = field(default=2.0, metadata={"help": "Epochs of teacher fine-tuning."})
    student_epochs: float = field(default=3.0, metadata={"help": "Epochs of distillation."})
    teacher_learning_rate: float = field(
        default=1e-4, metadata={"help": "Teacher fine-tuning learning rate."}
    )
    student_learning_rate: float = field(default=2e-4, metadata={"help": "Distillation learning rate."})
    batch_size: int = field(default=16, metadata={"help": "Training batch size of both stages."})
    max_length: int = field(default=128, metadata={"help": "Tokens per article (longer ones are truncated)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on only this many articles (a quick smoke run)."}
    )
    seed: int = field(
        default=42, metadata={"help": "Seed of the split, the initialisation and the data order."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Redo stages whose results already exist."})

    def __post_init__(self):
        if self.student_layers < 1:
            raise ValueError(f"student_layers must be >= 1, got {self.student_layers}.")
        for name in ("teacher_epochs", "student_epochs", "teacher_learning_rate", "student_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")


def _stage_args(
    demo: DemoArguments, folder: Path, epochs: float, learning_rate: float, cls=TrainingArguments, **extra
):
    return cls(
        output_dir=str(folder),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=demo.batch_size,
        per_device_eval_batch_size=64,
        warmup_ratio=0.1,
        weight_decay=0.01,
        eval_strategy="no",
        save_strategy="steps",
        save_steps=50,
        save_total_limit=1,
        logging_steps=25,
        seed=demo.seed,
        report_to="none",
        dataloader_pin_memory=False,
        overwrite_output_dir=demo.overwrite,
        **extra,
    )


def _cached(path: Path, overwrite: bool) -> dict | None:
    if path.is_file() and not overwrite:
        logger.info("Reusing %s (pass --overwrite true to redo this stage).", path)
        return json.loads(path.read_text())
    return None


def run_demo(demo: DemoArguments) -> dict:
    """Fine-tune the teacher, distill the student, evaluate both; print and save the comparison table."""
    out = Path(demo.output_dir)
    data_args = DataArguments(
        max_length=demo.max_length, split_seed=demo.seed, max_train_samples=demo.max_train_samples
    )

    teacher_dir = out / "teacher"
    teacher_results = _cached(teacher_dir / "finetune_results.json", demo.overwrite)
    if teacher_results is None:
        print(f"[1/2] Fine-tuning the packaged MiniLM teacher on BBC News -> {teacher_dir}")
        args = _stage_args(demo, teacher_dir, demo.teacher_epochs, demo.teacher_learning_rate)
        teacher_results = finetune(FinetuneArguments(), data_args, args)

    student_dir = out / "student"
    student_results = _cached(student_dir / "distill_results.json", demo.overwrite)
    if student_results is None:
        print(
            f"[2/2] Distilling a {demo.student_layers}-layer student (logits + hidden states + attention) -> {student_dir}"
        )
        args = _stage_args(
            demo,
            student_dir,
            demo.student_epochs,
            demo.student_learning_rate,
            cls=DistillationTrainingArguments,
            temperature=2.0,
            alpha=0.5,
            hidden_weight=1.0,
            attention_weight=1.0,
            hidden_loss="mse",
            attention_loss="kl",
            layer_mapping="uniform",
        )
        distill_args = DistillArguments(teacher=str(teacher_dir), student_layers=demo.student_layers)
        student_results = distill(distill_args, data_args, args)

    summary = summarize(student_results)
    write_json(out / "demo_results.json", summary)
    table = format_table(summary)
    (out / "demo_results.md").write_text(table + "\n")
    print("\n" + table + f"\n\nArtifacts: {out.resolve()}")
    return summary


def summarize(results: dict) -> dict:
    """Teacher vs student on the held-out test split, from `distill_results.json`."""
    rows = []
    for role in ("teacher", "student"):
        shape = results[f"{role}_shape"]
        rows.append(
            {
                "model": role,
                "layers": shape["layers"],
                "parameters": shape["parameters"],
                "test_accuracy": results[f"{role}_test_accuracy"],
                "test_macro_f1": results[f"{role}_test_f1"],
            }
        )
    teacher = rows[0]
    for row in rows:
        row["accuracy_kept"] = row["test_accuracy"] / teacher["test_accuracy"]
        row["parameters_ratio"] = row["parameters"] / teacher["parameters"]
    return {"rows": rows, "distillation": results["losses"], "layer_mapping": results["layer_mapping"]}


def format_table(summary: dict) -> str:
    header = (
        "| model | layers | parameters | test accuracy | test macro-F1 | accuracy kept | size vs teacher |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        lines.append(
            f"| {row['model']} | {row['layers']} | {row['parameters'] / 1e6:.1f}M | {row['test_accuracy']:.4f} | "
            f"{row['test_macro_f1']:.4f} | {row['accuracy_kept']:.1%} | {row['parameters_ratio']:.2f}x |"
        )
    return "\n".join(lines)
