"""Distillation quality on hard BBC News tasks: does a distilled 2-layer student beat plain fine-tuning?

One command, per task in `TASKS`:

1. the first `labelled` training units of the task (`--dataset T --max_train_samples N`) and, as unlabelled
   transfer text, units of the task's transfer articles (`--transfer_dataset T`: articles in none of the
   labelled splits, so never a test article), through the same data path as `distilnlp distill`;
2. the packaged MiniLM teacher fine-tuned once on the labelled units (kept under `--work_dir`, reused);
3. the teacher's logits over every training set, cached once (`build_teacher_cache`; the teacher never runs
   during student training);
4. every setup in `SETUPS` (a 2-layer `create_student` copy of the teacher) over `--seeds`, scored on the
   test split: mean ± std, retention of the teacher's accuracy, and the per-seed paired gain over the
   hard-label baseline (same seed = same data order and dropout draws).

A new setup is one `Setup(...)` line in `SETUPS`; its `args` are `DistillationTrainingArguments` fields, and a
setup whose fields this distilnlp lacks is reported as skipped.

    python benchmarks/distillation_quality.py --output benchmarks/results      # full run
    python benchmarks/distillation_quality.py --seeds 0 --tasks bbc_news_sentences   # quick sizing run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
)

from distilnlp import DistillationTrainer, DistillationTrainingArguments, create_student
from distilnlp.commands.arguments import resolve_model_path
from distilnlp.commands.steps import evaluate_on, prepare_data
from distilnlp.data import DataArguments
from distilnlp.distill.stage_arguments import StageTrainingArguments
from distilnlp.onnx import export_teacher
from distilnlp.teacher_cache import TeacherCache, TeacherCacheError, build_teacher_cache


@dataclass(frozen=True)
class Task:
    name: str  # a `--dataset` name
    labelled: int  # labelled training rows
    test: int  # test rows scored (first N of the shuffled test split)
    transfer_window: int | None = None  # --transfer_window (unset: the task's own units)


@dataclass(frozen=True)
class Setup:
    name: str
    description: str
    args: dict = field(default_factory=dict)  # DistillationTrainingArguments fields
    transfer: int = 0  # transfer rows as a multiple of the labelled rows
    distill: bool = True  # False: a plain `transformers.Trainer` fine-tune (hard labels only)
    live_teacher: bool = False  # the teacher runs every step (augmented inputs, relation losses need it)
    teachers: int = 1  # >1: an ensemble of teachers fine-tuned with seeds 0..teachers-1 (cached logits)
    learning_rate: float | None = None  # unset: --learning_rate


TASKS = {
    "bbc_news_sentences": Task("bbc_news_sentences", labelled=2000, test=1500),
    "bbc_news_windows": Task("bbc_news_windows", labelled=2000, test=1500),
}
KD = {"alpha": 0.9, "temperature": 2.0}
SETUPS = [
    Setup("hard_labels", "plain fine-tuning of the 2-layer student (transformers.Trainer)", distill=False),
    # The baseline at a higher learning rate too, so that distillation is compared with a tuned fine-tune.
    Setup("hard_labels_lr3e-4", "plain fine-tuning, learning rate 3e-4", distill=False, learning_rate=3e-4),
    Setup("logit_kd", "logit distillation on the labelled rows (alpha 0.9, T 2)", KD),
    Setup("logit_kd_transfer4x", "logit distillation + transfer set 4x the labelled rows", KD, transfer=4),
    Setup("logit_kd_transfer8x", "logit distillation + transfer set 8x the labelled rows", KD, transfer=8),
]
# Run with `--setups hard_labels logit_kd_transfer4x <these>` (they cost more: a live teacher or a second one).
EXTRA_SETUPS = [
    Setup(
        "transfer4x_augment_mask", "logit KD + transfer 4x + consistent augmentation (mask 15%, live teacher)",
        KD | {"augmentation": "mask", "augmentation_prob": 0.15}, transfer=4, live_teacher=True,
    ),
    Setup(
        "transfer4x_relation", "logit KD + transfer 4x + MiniLMv2 Q/K/V relations, last layers (live teacher)",
        KD | {"relation_weight": 1.0}, transfer=4, live_teacher=True,
    ),
    Setup(
        "transfer4x_hidden", "logit KD + transfer 4x + hidden-state MSE, uniform layer map (live teacher)",
        KD | {"hidden_weight": 1.0}, transfer=4, live_teacher=True,
    ),
    Setup(
        "transfer4x_ensemble2", "logit KD + transfer 4x, soft targets from 2 teachers (seeds 0, 1; equal weights)",
        KD, transfer=4, teachers=2,
    ),
]  # fmt: skip
ALL_SETUPS = SETUPS + EXTRA_SETUPS
BASELINE = "hard_labels"
MAX_LENGTH = 64


def task_data(task: Task, seed: int, transfer_multiple: int, tokenizer):
    """(labelled train rows, labelled + transfer rows, test rows, label names), tokenized, through the same
    data path as `distilnlp distill --dataset T --transfer_dataset T` (T's transfer articles: none of them
    in a labelled split)."""
    data_args = DataArguments(
        dataset=task.name, split_seed=seed, max_length=MAX_LENGTH, max_train_samples=task.labelled,
        max_eval_samples=task.test, transfer_dataset=task.name if transfer_multiple else None,
        transfer_window=task.transfer_window, max_transfer_samples=transfer_multiple * task.labelled or None,
    )  # fmt: skip
    _, tokenized, names = prepare_data(data_args, tokenizer, with_transfer=True)
    train = tokenized["train"]
    return train.select(range(task.labelled)), train, tokenized["test"], names


def finetune_teacher(task: Task, train, tokenizer, names, work: Path, cli, seed: int = 0) -> Path:
    """The packaged MiniLM fine-tuned on the labelled rows with `seed`, once (reused from `work` when there)."""
    suffix = "" if seed == 0 else f"-seed{seed}"
    folder = work / f"{task.name}-{task.labelled}-teacher-{cli.teacher_epochs}ep{suffix}"
    if (folder / "model.safetensors").exists():
        return folder
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path("minilm"), num_labels=len(names), ignore_mismatched_sizes=True
    )
    args = StageTrainingArguments(
        output_dir=str(folder), num_train_epochs=cli.teacher_epochs, learning_rate=5e-5, warmup_ratio=0.1,
        per_device_train_batch_size=32, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, logging_steps=50, seed=seed,
    )  # fmt: skip
    Trainer(
        model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)
    ).train()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def teacher_cache(folder: Path, teacher_dir: Path, train, test, tokenizer, cli) -> TeacherCache:
    """The teacher's logits over `train` and `test`: the cache in `folder` when it was built from this
    teacher over exactly these rows (a re-run with other setups reuses it), else built anew."""
    try:
        cache = TeacherCache.load(folder)
        cache.check(teacher_dir, tokenizer, MAX_LENGTH)
        if cache.split_for(train) == "train" and cache.split_for(test) == "test":
            return cache
    except TeacherCacheError:  # missing, stale or of other rows
        pass
    return build_teacher_cache(
        folder, teacher_dir, {"train": train, "test": test}, tokenizer=tokenizer, max_length=MAX_LENGTH,
        backend=cli.cache_backend, onnx_export=export_teacher,
    )  # fmt: skip


def run_setup(
    setup: Setup, seed: int, teachers: list, tokenizer, train, test, work: Path, cli, student=None
) -> dict:
    """Train and score one setup's 2-layer student with `seed`. `train` holds the cached logits of
    `teachers[: setup.teachers]` (a live-teacher setup drops them and runs `teachers[0]` every step).
    `student`: a callable that builds the student (default: `create_student(teachers[0], 2)`)."""
    torch.manual_seed(seed)
    student = student() if student is not None else create_student(teachers[0], 2)
    common = dict(
        output_dir=str(work / f"run-{setup.name}-{seed}"), num_train_epochs=cli.epochs,
        learning_rate=setup.learning_rate or cli.learning_rate, warmup_ratio=0.1, weight_decay=0.01, per_device_train_batch_size=32,
        per_device_eval_batch_size=128, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, logging_steps=100, seed=seed, data_seed=seed,
    )  # fmt: skip
    start = time.perf_counter()
    collator = DataCollatorWithPadding(tokenizer)
    if setup.distill:
        args = DistillationTrainingArguments(**common, **setup.args)
        teacher_model = teachers[: setup.teachers] if setup.teachers > 1 else None
        if setup.live_teacher:
            teacher_model, train = teachers[0], train.remove_columns(["teacher_logits"])
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher_model,
            args=args,
            train_dataset=train,
            data_collator=collator,
            processing_class=tokenizer,  # augmentation='mask' reads the mask token from it
        )
    else:
        plain = train.remove_columns([c for c in train.column_names if c.startswith("teacher_")])
        trainer = Trainer(
            model=student, args=StageTrainingArguments(**common), train_dataset=plain, data_collator=collator
        )
    trainer.train()
    seconds = time.perf_counter() - start
    scores = evaluate_on(student, test, tokenizer, trainer.args, "test")
    return {
        "accuracy": scores["test_accuracy"],
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 1),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(runs: dict, base: str, name: str) -> dict:
    diffs = [a - b for a, b in zip(runs[name], runs[base], strict=True)]
    gain, gain_std = mean_std(diffs)
    spread = max(mean_std(runs[name])[1], mean_std(runs[base])[1])
    return {
        "against": base, "per_seed": [round(d, 4) for d in diffs], "mean": round(gain, 4),
        "std": round(gain_std, 4), "seed_spread_std": round(spread, 4),
        "gain_over_2_std": bool(gain > 2 * spread), "paired_gain_over_2_std": bool(gain > 2 * gain_std),
    }  # fmt: skip


def run_task(task: Task, setups: list[Setup], cli, work: Path) -> dict:
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    largest = max(s.transfer for s in setups)
    labelled, full, test, names = task_data(task, cli.split_seed, largest, tokenizer)
    num_teachers = max(s.teachers for s in setups)
    teacher_dirs = [
        finetune_teacher(task, labelled, tokenizer, names, work, cli, seed) for seed in range(num_teachers)
    ]
    teachers = [AutoModelForSequenceClassification.from_pretrained(d) for d in teacher_dirs]
    teacher_seconds = time.perf_counter() - start
    cache_start = time.perf_counter()
    # One pass of each teacher over labelled + transfer rows and the test rows; smaller transfer multiples and
    # the labelled rows alone are prefixes of the first split, so they take a prefix of its cached logits.
    caches = [
        teacher_cache(work / f"{task.name}-cache{'' if i == 0 else f'-teacher{i}'}", teacher_dir, full, test, tokenizer, cli)
        for i, teacher_dir in enumerate(teacher_dirs)
    ]  # fmt: skip
    cache_seconds = time.perf_counter() - cache_start
    train_logits = [np.asarray(cache.logits("train")["teacher_logits"], dtype=np.float32) for cache in caches]
    train_sets = {}
    for m, k in {(s.transfer, s.teachers) for s in setups}:
        rows = range(task.labelled * (1 + m))
        # K teachers' logits side by side, (N, K * C), as a K-teacher cache stores them.
        logits = np.concatenate([t[: len(rows)] for t in train_logits[:k]], axis=-1)
        column = Dataset.from_dict({"teacher_logits": logits.tolist()})
        train_sets[m, k] = concatenate_datasets([full.select(rows), column], axis=1)
    # The teacher's test accuracy from its cached (ONNX Runtime fp32, = PyTorch to ~1e-6) test logits.
    test_logits = np.asarray(caches[0].logits("test")["teacher_logits"])
    teacher_acc = float((test_logits.argmax(-1) == np.asarray(test["labels"])).mean())
    print(f"[{task.name}] teacher test accuracy {teacher_acc:.4f} (n={len(test)})", flush=True)
    extra_teachers = {}
    for i, cache in enumerate(caches[1:], start=1):
        logits = np.asarray(cache.logits("test")["teacher_logits"])
        extra_teachers[f"teacher_seed{i}"] = round(
            float((logits.argmax(-1) == np.asarray(test["labels"])).mean()), 4
        )
    if extra_teachers:
        print(f"[{task.name}] other teachers' test accuracy {extra_teachers}", flush=True)

    table = {}
    for setup in setups:
        table[setup.name] = {
            "description": setup.description, "args": setup.args, "transfer_multiple": setup.transfer,
            "distill": setup.distill, "live_teacher": setup.live_teacher, "teachers": setup.teachers,
            "learning_rate": setup.learning_rate or cli.learning_rate,
            "train_rows": len(train_sets[setup.transfer, setup.teachers]), "runs": [],
        }  # fmt: skip
        for seed in cli.seeds:
            train = train_sets[setup.transfer, setup.teachers]
            result = run_setup(setup, seed, teachers, tokenizer, train, test, work, cli)
            table[setup.name]["runs"].append({"seed": seed, **result})
            print(f"[{task.name}] {setup.name} seed {seed}: {result}", flush=True)
    result = {
        "task": dataclasses.asdict(task), "labels": names, "test_size": len(test),
        "labelled_rows": len(labelled), "transfer_rows": len(full) - len(labelled),
        "teacher_accuracy": round(teacher_acc, 4), "other_teachers_accuracy": extra_teachers,
        "teacher_seconds": round(teacher_seconds, 1),
        "teacher_cache_seconds": round(cache_seconds, 1), "setups": table,
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    return summarise(result)


def summarise(task: dict) -> dict:
    """Mean ± std, retention and paired gains of every setup, from its per-seed runs (sorted by seed)."""
    table = task["setups"]
    runs = {}
    for name, row in table.items():
        row["runs"] = sorted(row["runs"], key=lambda run: run["seed"])
        runs[name] = [run["accuracy"] for run in row["runs"]]
        mean, std = mean_std(runs[name])
        row |= {
            "seeds": [run["seed"] for run in row["runs"]], "accuracy_per_seed": runs[name],
            "accuracy_mean": round(mean, 4), "accuracy_std": round(std, 4),
            "retention": round(mean / task["teacher_accuracy"], 4),
        }  # fmt: skip
        if name != BASELINE:
            row["gain_over_baseline"] = compare(runs, BASELINE, name)
    # The strongest plain fine-tune (highest mean), the fairest bar for a distilled setup.
    plain = [n for n, row in table.items() if not row.get("distill", n != BASELINE)]
    best_plain = max(plain, key=lambda n: statistics.fmean(runs[n]))
    task["best_hard_labels"] = best_plain
    for name, row in table.items():
        if row.get("distill", name != BASELINE):
            row["gain_over_best_hard_labels"] = compare(runs, best_plain, name)
    for name, row in table.items():  # the same recipe with and without the transfer set
        twin = next(
            (
                n
                for n, r in table.items()
                if r["transfer_multiple"] == 0
                and r["args"] == row["args"]
                and r.get("distill", n != BASELINE)
            ),
            None,
        )
        if row["transfer_multiple"] and twin is not None:
            row["gain_over_same_recipe_without_transfer"] = compare(runs, twin, name)
    return task


def _secs(value: float | None) -> str:
    return "not recorded" if value is None else f"{value / 60:.1f} min"


def _gain_cells(gain: dict | None) -> str:
    """'mean ± std pts | yes/no' of a paired comparison, '- | -' without one."""
    if gain is None:
        return "- | -"
    return f"{gain['mean'] * 100:+.2f} ± {gain['std'] * 100:.2f} pts | {'yes' if gain['gain_over_2_std'] else 'no'}"


def markdown(report: dict) -> str:
    lines = [
        "# Distillation quality (2-layer MiniLM students, BBC News hard tasks)", "",
        f"Seeds {report['seeds']}, {report['epochs']} epochs, batch 32, lr {report['learning_rate']}, max_length "
        f"{MAX_LENGTH}; total {report['seconds'] / 60:.1f} min on {os.cpu_count()} cores (load average at start "
        f"{report['load_start']}, at end {report['load_end']}; 1, 5 and 15-minute averages).", "",
    ]  # fmt: skip
    if len(report.get("runs", [])) > 1:
        lines += [
            f"Merged (`--merge`) from {len(report['runs'])} runs, one after the other; the total above is their sum: "
            + "; ".join(
                f"`{r['command']}`: {r['seconds'] / 60:.1f} min (load {r['load_start']} -> {r['load_end']})"
                for r in report["runs"]
            )
            + ".", "",
        ]  # fmt: skip
    for name, task in report["tasks"].items():
        lines += [
            f"## {name}", "",
            f"{task['labelled_rows']} labelled training rows; test set {task['test_size']} examples; teacher "
            f"(6-layer MiniLM, fine-tuned on the labelled rows) test accuracy **{task['teacher_accuracy']:.4f}**. "
            f"Teacher fine-tune {_secs(task['teacher_seconds'])}, teacher cache over "
            f"{task['labelled_rows'] + task['transfer_rows']} train + {task['test_size']} test rows "
            f"{_secs(task['teacher_cache_seconds'])}; task total {_secs(task['seconds'])}."
            + (f" **Incomplete:** {task['note']}" if task.get("note") else ""),
            "", f"| setup | lr | train rows | test accuracy (mean ± std) | kept | paired gain vs {BASELINE} | > 2 std "
            f"| paired gain vs best hard labels ({task['best_hard_labels']}) | > 2 std |",
            "|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for setup_name, row in task["setups"].items():
            gains = [_gain_cells(row.get(k)) for k in ("gain_over_baseline", "gain_over_best_hard_labels")]
            lines.append(
                f"| {setup_name} | {row.get('learning_rate', report['learning_rate']):g} | {row['train_rows']} | "
                f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f} | {row['retention'] * 100:.1f}% | "
                + " | ".join(gains)
                + " |"
            )
        distilled = {n: r for n, r in task["setups"].items() if "gain_over_best_hard_labels" in r}
        if distilled:
            best_name, best = max(distilled.items(), key=lambda item: item[1]["accuracy_mean"])
            gain = best["gain_over_best_hard_labels"]
            lines.append(
                f"\nBest distilled setup: **{best_name}**, keeps {best['retention'] * 100:.1f}% of the teacher "
                f"(target >= 99%: {'met' if best['retention'] >= 0.99 else 'not met'}); gain over the best hard-label "
                f"run ({gain['against']}) {gain['mean'] * 100:+.2f} pts vs 2 x seed spread "
                f"{2 * gain['seed_spread_std'] * 100:.2f} pts (target: {'met' if gain['gain_over_2_std'] else 'not met'})."
            )
        for setup_name, row in task["setups"].items():
            same = row.get("gain_over_same_recipe_without_transfer")
            if same:
                lines.append(
                    f"\n{setup_name} vs {same['against']} (same recipe without the transfer set): "
                    f"{same['mean'] * 100:+.2f} ± {same['std'] * 100:.2f} pts per seed ({same['per_seed']})."
                )
        lines.append("")
    if report["skipped"]:
        lines += ["Skipped setups (fields missing in this distilnlp): " + ", ".join(report["skipped"]), ""]
    return "\n".join(lines)


def write(report: dict, out: Path) -> str:
    text = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distillation_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "distillation_quality.md").write_text(text + "\n")
    return text


def merge(paths: list[str], out: Path) -> None:
    """One report from several runs: different --tasks, the same task with different --seeds or different
    --setups (same settings otherwise; a task's teacher is the same folder in every run)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(reports[0], tasks={}, runs=[], seeds=sorted({s for r in reports for s in r["seeds"]}))
    for report in reports:
        merged["runs"].append(
            {k: report.get(k) for k in ("command", "seeds", "seconds", "load_start", "load_end")}
            | {"tasks": list(report["tasks"])}
        )
        for name, task in report["tasks"].items():
            for row in task["setups"].values():  # reports written before runs recorded their seed
                for run, seed in zip(row["runs"], report["seeds"], strict=True):
                    run.setdefault("seed", seed)
            if name not in merged["tasks"]:
                merged["tasks"][name] = task
                continue
            into = merged["tasks"][name]
            if into["teacher_accuracy"] != task["teacher_accuracy"]:
                raise ValueError(f"The reports of {name} have different teachers; cannot merge them.")
            into.setdefault("other_teachers_accuracy", {}).update(task.get("other_teachers_accuracy", {}))
            for setup, row in task["setups"].items():
                if setup not in into["setups"]:  # a run of other setups (e.g. the extra ones)
                    into["setups"][setup] = row
                    continue
                # Setups both runs share (the baseline) keep one run per seed: same seed, same result.
                seen = {run["seed"] for run in into["setups"][setup]["runs"]}
                into["setups"][setup]["runs"] += [run for run in row["runs"] if run["seed"] not in seen]
            into["seconds"] = max(into["seconds"], task["seconds"])
    merged["tasks"] = {name: summarise(task) for name, task in merged["tasks"].items()}
    merged["seconds"] = sum(r["seconds"] for r in reports)  # run one after the other
    merged["complete"] = all(r.get("complete") for r in reports)
    merged["load_end"] = reports[-1].get("load_end")
    print(write(merged, out))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--setups", nargs="+", default=[s.name for s in SETUPS], choices=[s.name for s in ALL_SETUPS],
        help="default: the core setups; the extra ones (live or second teacher) are named in EXTRA_SETUPS",
    )  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--teacher_epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--labelled", type=int, default=None, help="labelled rows per task (default: TASKS')")
    parser.add_argument("--test_size", type=int, default=None, help="test rows per task (default: TASKS')")
    parser.add_argument("--split_seed", type=int, default=42)
    parser.add_argument("--cache_backend", default="onnx")
    parser.add_argument("--work_dir", default="runs/distillation_quality")
    parser.add_argument("--output", default=None, help="folder for distillation_quality.json / .md")
    parser.add_argument(
        "--merge", nargs="+", default=None,
        help="instead of running: merge these reports (runs of different --tasks) into --output",
    )  # fmt: skip
    cli = parser.parse_args()
    if cli.merge:
        return merge(cli.merge, Path(cli.output or "."))
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(cli.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    fields = {f.name for f in dataclasses.fields(DistillationTrainingArguments)}
    chosen = [s for s in ALL_SETUPS if s.name in cli.setups]
    skipped = [s.name for s in chosen if set(s.args) - fields]
    setups = [s for s in chosen if s.name not in skipped]
    if BASELINE not in {s.name for s in setups}:
        parser.error(f"the setups must include the baseline {BASELINE!r}")
    start, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    report = {
        "seeds": cli.seeds, "epochs": cli.epochs, "teacher_epochs": cli.teacher_epochs,
        "learning_rate": cli.learning_rate, "max_length": MAX_LENGTH, "batch_size": 32,
        "cache_backend": cli.cache_backend, "skipped": skipped, "load_start": load_start, "tasks": {},
    }  # fmt: skip
    report["command"] = "python benchmarks/distillation_quality.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(cli).items()
        if v is not None
    )
    for name in cli.tasks:
        task = TASKS[name]
        task = dataclasses.replace(
            task, labelled=cli.labelled or task.labelled, test=cli.test_size or task.test
        )
        report["tasks"][name] = run_task(task, setups, cli, work)
        report["tasks"][name]["load_after"] = [round(x, 2) for x in os.getloadavg()]
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["load_end"] = report["tasks"][name]["load_after"]
        report["complete"] = name == cli.tasks[-1]
        if cli.output:  # after every task, so a run cut short keeps what it measured
            write(report, Path(cli.output))
    print(markdown(report))


if __name__ == "__main__":
    main()
