"""Offline distillation on BBC News with the MiniLM teacher: what the teacher-logit cache costs and buys.

One run measures, as ratios taken side by side on the same machine:

1. Building the cache (train + validation splits) through PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime
   int8 (with fp32 re-runs of low-margin examples); export / quantization time included. Top-1 agreement and
   max |logit difference| against PyTorch.
2. The cost of one training step (batch 16, max_length 128) of a 2-layer student distilled from cached
   logits vs plain fine-tuning of the same student, interleaved in blocks to cancel machine drift.
3. With `--teacher` (a fine-tuned teacher): 10% of the training labels kept, the other 90% used as unlabelled
   transfer text. The student distilled from the cached soft targets vs the same student fine-tuned on the
   labelled 10% alone, for the same number of steps; test accuracy of both (and of the teacher).

The student is the packaged all-MiniLM-L6-v2 cut to 2 layers (`create_student`) with a fresh head, the same
initialisation in every run. Without `--teacher`, the packaged MiniLM with a fresh 5-label head is the
teacher (fine for speed ratios) and part 3 is skipped.

    distilnlp finetune recipes/finetune_bbc_news.yaml --output_dir runs/teacher     # ~5 min, once
    python benchmarks/offline_distillation.py --teacher runs/teacher --output benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
)

from distilnlp import DistillationTrainer, DistillationTrainingArguments, create_student
from distilnlp.commands.arguments import resolve_model_path
from distilnlp.commands.steps import evaluate_on, prepare_data
from distilnlp.data import DataArguments, labeled_subset
from distilnlp.distill.stage_arguments import StageTrainingArguments
from distilnlp.onnx import export_teacher
from distilnlp.teacher_cache import TeacherCache, build_teacher_cache

BACKENDS = ("torch", "onnx", "onnx-int8")


class StepTimer(TrainerCallback):
    """Seconds between consecutive optimizer steps (data loading, forward, backward, update)."""

    def __init__(self):
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def student_from(base_path: str, num_labels: int, layers: int, seed: int):
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=num_labels)
    torch.manual_seed(seed)
    return create_student(base, layers)


def common_args(folder: Path, seed: int, **extra) -> dict:
    return dict(
        output_dir=str(folder),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=50,
        seed=seed,
        data_seed=seed,
        **extra,
    )


def build_caches(teacher_dir: str, tokenizer, data, out: Path, backends, batch_size: int) -> dict:
    splits = {"train": data["train"], "validation": data["validation"]}
    report, logits = {}, {}
    for backend in backends:
        start = time.perf_counter()
        cache = build_teacher_cache(
            out / f"cache-{backend}",
            teacher_dir,
            splits,
            tokenizer=tokenizer,
            max_length=128,
            backend=backend,
            batch_size=batch_size,
            onnx_export=export_teacher,
        )
        seconds = time.perf_counter() - start
        logits[backend] = np.concatenate([np.asarray(cache.logits(n)["teacher_logits"]) for n in splits])
        reruns = sum(s["fp32_reruns"] for s in cache.metadata["splits"].values())
        report[backend] = {"seconds": round(seconds, 2), "fp32_reruns": reruns}
        print(f"cache via {backend:9s}: {seconds:6.1f} s for {len(logits[backend])} examples", flush=True)
    reference = logits["torch"]
    for backend in backends:
        report[backend] |= {
            "speedup_vs_torch": round(report["torch"]["seconds"] / report[backend]["seconds"], 3),
            "top1_agreement_vs_torch": float((logits[backend].argmax(-1) == reference.argmax(-1)).mean()),
            "top1_mismatches_vs_torch": int((logits[backend].argmax(-1) != reference.argmax(-1)).sum()),
            "max_abs_logit_diff_vs_torch": float(np.abs(logits[backend] - reference).max()),
        }
    return report


def step_costs(base_path, tokenizer, data, cache_dir: Path, out: Path, blocks: int, steps: int, seed: int):
    """Median seconds per step: fine-tuning vs distilling from the cache, alternating blocks of `steps`."""
    collator = DataCollatorWithPadding(tokenizer)
    timers = {"finetune": StepTimer(), "distill_cached": StepTimer()}
    finetune = Trainer(
        model=student_from(base_path, 5, 2, seed),
        args=StageTrainingArguments(**common_args(out / "step-finetune", seed, max_steps=steps)),
        train_dataset=data["train"],
        data_collator=collator,
        callbacks=[timers["finetune"]],
    )
    distill = DistillationTrainer(
        model=student_from(base_path, 5, 2, seed),
        teacher_model=None,  # the cache holds everything the logit-only losses need
        args=DistillationTrainingArguments(
            **common_args(out / "step-distill", seed, max_steps=steps), teacher_cache=str(cache_dir)
        ),
        train_dataset=data["train"],
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[timers["distill_cached"]],
    )
    for _ in range(blocks):
        finetune.train()
        distill.train()
    medians = {name: statistics.median(t.times) for name, t in timers.items()}
    report = {
        name: {"median_step_s": round(m, 4), "steps_timed": len(timers[name].times)}
        for name, m in medians.items()
    }
    report["ratio_distill_cached_over_finetune"] = round(medians["distill_cached"] / medians["finetune"], 3)
    print(
        f"step: fine-tune {medians['finetune']:.3f} s, cached distillation {medians['distill_cached']:.3f} s "
        f"-> ratio {report['ratio_distill_cached_over_finetune']:.3f}",
        flush=True,
    )
    return report


def quality(cli, base_path, teacher_dir, tokenizer, out: Path, cache_dir: Path) -> dict:
    """10% labelled: distilled from cached soft targets on all of train vs fine-tuned on the 10% alone."""
    _, data, _ = prepare_data(
        DataArguments(labeled_fraction=cli.labeled_fraction, split_seed=cli.seed), tokenizer
    )
    labelled = labeled_subset(data["train"])
    steps = int(cli.epochs * len(data["train"]) / 16)
    collator = DataCollatorWithPadding(tokenizer)
    schedule = dict(learning_rate=cli.learning_rate, warmup_ratio=0.1, weight_decay=0.01, max_steps=steps)

    finetuned = student_from(base_path, 5, 2, cli.seed)
    Trainer(
        model=finetuned,
        args=StageTrainingArguments(**common_args(out / "q-finetune", cli.seed, **schedule)),
        train_dataset=labelled,
        data_collator=collator,
    ).train()

    distilled = student_from(base_path, 5, 2, cli.seed)
    DistillationTrainer(
        model=distilled,
        teacher_model=None,
        args=DistillationTrainingArguments(
            **common_args(out / "q-distill", cli.seed, **schedule),
            teacher_cache=str(cache_dir),
            temperature=cli.temperature,
            alpha=cli.alpha,
        ),
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        data_collator=collator,
    ).train()

    eval_args = StageTrainingArguments(**common_args(out / "q-eval", cli.seed))
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    scores = {
        name: evaluate_on(model, data["test"], tokenizer, eval_args, "test")
        for name, model in (("teacher", teacher), ("finetune_10pct", finetuned), ("distill_10pct", distilled))
    }
    report = {
        "labelled_examples": len(labelled),
        "unlabelled_examples": len(data["train"]) - len(labelled),
        "steps": steps,
        "settings": {"temperature": cli.temperature, "alpha": cli.alpha, **schedule},
        **{f"{name}_test_accuracy": round(s["test_accuracy"], 4) for name, s in scores.items()},
        **{f"{name}_test_f1": round(s["test_f1"], 4) for name, s in scores.items()},
    }
    print(
        f"10% labels ({len(labelled)} of {len(data['train'])}), {steps} steps: test accuracy teacher "
        f"{report['teacher_test_accuracy']:.4f}, fine-tuned on 10% {report['finetune_10pct_test_accuracy']:.4f}, "
        f"distilled {report['distill_10pct_test_accuracy']:.4f}",
        flush=True,
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default=None, help="fine-tuned teacher folder (needed for part 3)")
    parser.add_argument("--output", default="benchmarks/results", help="folder for the JSON and markdown")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="cache backends to time (torch first)")
    parser.add_argument("--cache_batch_size", type=int, default=64)
    parser.add_argument(
        "--blocks", type=int, default=3, help="alternating blocks of the step-cost comparison"
    )
    parser.add_argument("--block_steps", type=int, default=8, help="optimizer steps per block")
    parser.add_argument("--labeled_fraction", type=float, default=0.1)
    parser.add_argument(
        "--epochs", type=float, default=2.0, help="passes over the whole train split (part 3)"
    )
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=42)
    cli = parser.parse_args()
    backends = [b.strip() for b in cli.backends.split(",")]
    if backends[0] != "torch":
        parser.error("--backends must start with torch (the reference)")

    out = Path(cli.output)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="offline-distillation-"))
    base_path = resolve_model_path("minilm")
    started = time.perf_counter()
    if cli.teacher:
        teacher_dir = cli.teacher
    else:  # ratios only: the packaged encoder with a fresh, untrained 5-label head
        teacher_dir = str(work / "teacher")
        torch.manual_seed(cli.seed)
        AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=5).save_pretrained(
            teacher_dir
        )
        AutoTokenizer.from_pretrained(base_path).save_pretrained(teacher_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    _, data, _ = prepare_data(DataArguments(split_seed=cli.seed), tokenizer)

    report = {
        "teacher": cli.teacher or "packaged all-MiniLM-L6-v2 + fresh 5-label head",
        "threads": torch.get_num_threads(),
        "cache_build": build_caches(teacher_dir, tokenizer, data, work, backends, cli.cache_batch_size),
    }
    cache_dir = work / "cache-torch"
    report["step_cost"] = step_costs(
        base_path, tokenizer, data, cache_dir, work, cli.blocks, cli.block_steps, cli.seed
    )
    if cli.teacher:
        report["ten_percent_labels"] = quality(cli, base_path, teacher_dir, tokenizer, work, cache_dir)
    else:
        print("part 3 (10% labels) skipped: pass --teacher with a fine-tuned teacher folder")
    report["cache_fingerprint"] = TeacherCache.load(cache_dir).fingerprint
    report["total_seconds"] = round(time.perf_counter() - started, 1)

    rows = ["| measure | value |", "|---|---|"]
    for backend, r in report["cache_build"].items():
        rows.append(
            f"| cache build via {backend} | {r['seconds']:.1f} s ({r['speedup_vs_torch']:.2f}x vs torch), top-1 "
            f"agreement {r['top1_agreement_vs_torch']:.2%}, max abs diff {r['max_abs_logit_diff_vs_torch']:.2g} |"
        )
    step = report["step_cost"]
    rows.append(
        f"| step cost, cached distillation / fine-tuning | {step['ratio_distill_cached_over_finetune']:.3f} "
        f"({step['distill_cached']['median_step_s']:.3f} s / {step['finetune']['median_step_s']:.3f} s) |"
    )
    if "ten_percent_labels" in report:
        q = report["ten_percent_labels"]
        rows.append(f"| test accuracy, fine-tuned on 10% labels | {q['finetune_10pct_test_accuracy']:.4f} |")
        rows.append(
            f"| test accuracy, distilled (10% labels + 90% unlabelled) | {q['distill_10pct_test_accuracy']:.4f} |"
        )
        rows.append(f"| test accuracy, teacher | {q['teacher_test_accuracy']:.4f} |")
    markdown = "\n".join(rows)
    print(markdown)
    (out / "offline_distillation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "offline_distillation.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
