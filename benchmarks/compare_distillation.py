"""Plain fine-tuning vs logit-only vs full (logit + hidden + attention) distillation of the same student.

Same data (BBC News split), same student initialisation (layers copied from the teacher), same number of
optimizer steps, same learning rate; only the loss differs. Prints a markdown table and writes JSON + MD.

    python benchmarks/compare_distillation.py --teacher distilnlp-demo/teacher --output benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

from distilnlp import DistillationTrainer, create_student
from distilnlp.benchmark.metrics import compute_classification_metrics
from distilnlp.commands.steps import evaluate_on, prepare_data
from distilnlp.data import DataArguments
from distilnlp.distill.arguments import DistillationTrainingArguments
from distilnlp.distill.stage_arguments import StageTrainingArguments

SETUPS = {
    "fine-tune (hard labels only)": None,
    "logit distillation": dict(alpha=0.5, hidden_weight=0.0, attention_weight=0.0),
    "full distillation (logit + hidden + attention)": dict(
        alpha=0.5, hidden_weight=1.0, attention_weight=1.0
    ),
}


def stage_args(cls, folder: Path, cli, **extra):
    """The demo recipes' training settings (batch 16, warm-up 0.1, weight decay 0.01) for one setup."""
    return cls(
        output_dir=str(folder), num_train_epochs=cli.epochs, learning_rate=cli.learning_rate,
        per_device_train_batch_size=16, per_device_eval_batch_size=64, warmup_ratio=0.1, weight_decay=0.01,
        eval_strategy="no", save_strategy="no", logging_steps=25, seed=cli.seed, report_to="none",
        dataloader_pin_memory=False, overwrite_output_dir=True, **extra,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default="distilnlp-demo/teacher", help="fine-tuned teacher folder")
    parser.add_argument("--output", default="benchmarks/results", help="folder for the JSON and markdown")
    parser.add_argument("--student_layers", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=42)
    cli = parser.parse_args()

    out = Path(cli.output)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(cli.teacher)
    _, data, _ = prepare_data(DataArguments(split_seed=cli.seed), tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(cli.teacher, attn_implementation="eager")
    collator = DataCollatorWithPadding(tokenizer)

    rows = []
    for name, losses in SETUPS.items():
        torch.manual_seed(cli.seed)
        student = create_student(teacher, cli.student_layers, attn_implementation="eager")
        folder = out / "runs" / name.split(" ")[0]
        common = dict(
            train_dataset=data["train"],
            data_collator=collator,
            compute_metrics=compute_classification_metrics,
        )
        if losses is None:
            args = stage_args(StageTrainingArguments, folder, cli)
            trainer = Trainer(model=student, args=args, **common)
        else:
            args = stage_args(DistillationTrainingArguments, folder, cli, temperature=2.0, **losses)
            trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, **common)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        scores = evaluate_on(student, data["test"], tokenizer, args, "test")
        rows.append(
            {
                "setup": name,
                "steps": trainer.state.global_step,
                "test_accuracy": scores["test_accuracy"],
                "test_macro_f1": scores["test_f1"],
                "train_seconds": round(seconds, 1),
                "seconds_per_step": round(seconds / trainer.state.global_step, 3),
            }
        )
        print(rows[-1], flush=True)

    teacher_scores = evaluate_on(teacher, data["test"], tokenizer, args, "test")
    report = {
        "teacher": cli.teacher,
        "teacher_test_accuracy": teacher_scores["test_accuracy"],
        "teacher_test_macro_f1": teacher_scores["test_f1"],
        "student_layers": cli.student_layers,
        "epochs": cli.epochs,
        "learning_rate": cli.learning_rate,
        "rows": rows,
    }
    table = [
        f"Teacher ({teacher.config.num_hidden_layers} layers) test accuracy {report['teacher_test_accuracy']:.4f}; "
        f"{cli.student_layers}-layer students, {rows[0]['steps']} steps each, lr {cli.learning_rate}.",
        "",
        "| setup | test accuracy | test macro-F1 | s / step |",
        "|---|---|---|---|",
        *[
            f"| {r['setup']} | {r['test_accuracy']:.4f} | {r['test_macro_f1']:.4f} | {r['seconds_per_step']} |"
            for r in rows
        ],
    ]
    (out / "compare_distillation.json").write_text(json.dumps(report, indent=2))
    (out / "compare_distillation.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
