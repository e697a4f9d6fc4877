"""int8 accuracy on the hard sentence task, over seeds: the default export (PTQ) and quantization-aware
distillation (QAT), each against its fp32 student, with an equal-training control.

One command:

1. the teacher: `recipes/finetune_bbc_news_sentences.yaml` (2,000 labelled sentences, 2 epochs) fine-tuned once
   into `--work_dir` (or `--teacher FOLDER`, reused as it is);
2. per seed, `distilnlp sweep recipes/distill_bbc_news_sentences_transfer.yaml --student_layers 1,2 --seed S`
   (2,000 labelled + `--transfer` transfer sentences, teacher logits cached once for every seed): per depth the
   fp32 student, its default `distilnlp export` ("int8 PTQ") and the quantization-aware student that goes on
   distilling from it for `--quantization_aware_epochs` more ("int8 QAT");
3. the control, per seed and depth: the same fp32 student distilled as much longer *without* fake quantization
   (same epochs, learning rate, teacher), exported by default ("control int8 PTQ"), so that a QAT gain over PTQ
   is told apart from a gain of training longer;
4. test accuracy (1,500 sentences) of every model: mean ± std over seeds, and per-seed paired differences
   (same seed = same data order): PTQ - fp32, QAT - PTQ, QAT - control PTQ.

    python benchmarks/quantization_aware.py --output benchmarks/results            # 3 seeds, depths 1 and 2
    python benchmarks/quantization_aware.py --seeds 0 --depths 2 --transfer 2000    # quick sizing run

The seed-0 sweep (table, plot, chosen model) is copied to `<output>/sweep_bbc_news_sentences/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from distilnlp.benchmark.stages import BenchmarkArguments, run_benchmark
from distilnlp.commands.config import parse_config
from distilnlp.commands.deploy import (
    _texts_and_labels,
    checked_onnx_stage,
    export_with_task_data,
    load_tokenizer,
)
from distilnlp.commands.stages import distill
from distilnlp.commands.sweep import SWEEP_JSON, SWEEP_MARKDOWN, SWEEP_PLOT, SWEEP_TYPES, sweep
from distilnlp.onnx import ExportArguments, ParityError
from distilnlp.runs.artifacts import QUANTIZED_FILE

RECIPE = "recipes/distill_bbc_news_sentences_transfer.yaml"
FINETUNE_RECIPE = "recipes/finetune_bbc_news_sentences.yaml"
VARIANTS = ("fp32", "int8 PTQ", "int8 QAT", "control fp32", "control int8 PTQ")
DIFFERENCES = (("int8 PTQ", "fp32"), ("int8 QAT", "int8 PTQ"), ("int8 QAT", "control int8 PTQ"))


def sweep_argv(cli, seed: int, teacher: str | None) -> list[str]:
    argv = [RECIPE, "--student_layers", ",".join(map(str, cli.depths)), "--seed", str(seed)]
    argv += [
        "--output_dir",
        str(Path(cli.work_dir) / f"seed-{seed}"),
        "--max_transfer_samples",
        str(cli.transfer),
    ]
    argv += ["--teacher_cache", str(Path(cli.work_dir) / "teacher-cache"), "--disable_tqdm", "true"]
    argv += ["--latency_runs", str(cli.latency_runs)]
    if teacher:
        argv += ["--teacher", teacher]
    else:  # the first sweep fine-tunes the teacher into its own folder; later seeds reuse it
        argv += ["--finetune_recipe", FINETUNE_RECIPE]
    return argv


def control(
    config: tuple, seed_dir: Path, depth: int, teacher: str, qat_epochs: float, qat_lr: float
) -> dict:
    """The fp32 student distilled `qat_epochs` more without fake quantization, exported by default: test accuracy
    of the student (PyTorch, = its fp32 graph) and of its int8 graph (None when the export failed its gate), and
    the export's int8 choice. `config`: the sweep's parsed `SWEEP_TYPES`."""
    layers = seed_dir / f"layers-{depth}"
    student, onnx_dir = layers / "student-control", layers / "onnx-control"
    sweep_distill, data_args, sweep_training, _ = config
    distill_args = sweep_distill.for_depth(depth, student=str(layers / "student"), teacher=teacher)
    args = dataclasses.replace(
        sweep_training, output_dir=str(student), num_train_epochs=qat_epochs, learning_rate=qat_lr
    )
    results = distill(distill_args, data_args, args)
    run = {"control fp32": results["student_test_accuracy"], "control int8 PTQ": None, "control note": None}
    if not (onnx_dir / "distilnlp_export.json").is_file():
        try:
            export_with_task_data(
                ExportArguments(model_dir=str(student), output_dir=str(onnx_dir)), data_args
            )
        except ParityError as error:
            run["control note"] = str(error)
    if (onnx_dir / "distilnlp_export.json").is_file():
        bench = BenchmarkArguments(
            output_dir=str(layers / "benchmark-control"), sequence_length=data_args.max_length, latency_runs=1,
            throughput_runs=1,
        )  # fmt: skip
        stage = checked_onnx_stage("control int8 PTQ", onnx_dir, QUANTIZED_FILE, bench)
        texts, labels = _texts_and_labels(data_args, "test")
        report = run_benchmark([stage], texts, labels, load_tokenizer(student, "student"), bench)
        run["control int8 PTQ"] = report["stages"][0]["accuracy"]
    return run | {"control int8 choice": export_choice(onnx_dir)}


def export_choice(onnx_dir: Path) -> dict | None:
    if not (onnx_dir / "distilnlp_export.json").is_file():
        return None  # rejected by its gate
    choice = json.loads((onnx_dir / "distilnlp_export.json").read_text())["int8_choice"]
    chosen = choice["attempts"][-1]
    return {key: chosen[key] for key in ("name", "fused", "fp32_nodes", "agreement", "accuracy_drop")} | {
        "reference": choice.get("reference"),
        "num_samples": choice["num_samples"],
    }


def mean_std(values: list[float | None]) -> dict:
    """Mean and std of the values that exist (a rejected export has none); `missing` counts the others."""
    missing = sum(v is None for v in values)
    values = [v for v in values if v is not None] or [float("nan")]
    return {
        "missing": missing,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": values,
    }


def summarise(runs: dict, depths: list[int]) -> dict:
    table = {}
    for depth in depths:
        rows = [runs[seed][depth] for seed in sorted(runs)]
        table[depth] = {v: mean_std([r[v] for r in rows]) for v in VARIANTS}
        for a, b in DIFFERENCES:
            table[depth][f"{a} - {b}"] = mean_std(
                [None if r[a] is None or r[b] is None else r[a] - r[b] for r in rows]
            )
    return table


def markdown(report: dict) -> str:
    lines = [
        f"Test accuracy on bbc_news_sentences ({report['test_size']} test sentences), {len(report['seeds'])} seeds "
        f"({', '.join(map(str, report['seeds']))}), mean ± std; teacher {report['teacher_accuracy']:.4f}. "
        f"Students distilled 1 epoch from 2,000 labelled + {report['transfer']} transfer sentences; QAT and the "
        f"control go on {report['quantization_aware_epochs']:g} epoch at lr {report['quantization_aware_learning_rate']:g}.",
        "",
        "| depth | " + " | ".join(VARIANTS) + " |",
        "|---|" + "---:|" * len(VARIANTS),
    ]
    for depth, row in report["summary"].items():
        cells = [f"{row[v]['mean']:.4f} ± {row[v]['std']:.4f}" for v in VARIANTS]
        lines.append(f"| {depth}L | " + " | ".join(cells) + " |")
    lines += ["", "Paired per seed (points):", "", "| depth | " + " | ".join(f"{a} - {b}" for a, b in DIFFERENCES) + " |",
              "|---|" + "---:|" * len(DIFFERENCES)]  # fmt: skip
    for depth, row in report["summary"].items():
        cells = []
        for a, b in DIFFERENCES:
            d = row[f"{a} - {b}"]
            cells.append(
                f"{d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} ({', '.join(f'{x * 100:+.2f}' for x in d['per_seed'])})"
            )
        lines.append(f"| {depth}L | " + " | ".join(cells) + " |")
    lines += ["", "int8 graphs chosen by the default export (seed, depth: PTQ / QAT / control):", ""]
    for seed, by_depth in report["runs"].items():
        for depth, run in by_depth.items():
            names = [
                (run[f"{v} choice"] or {"name": "rejected"})["name"]
                for v in ("int8 PTQ", "int8 QAT", "control int8")
            ]
            lines.append(f"- seed {seed}, {depth}L: " + " / ".join(names))
    lines += [
        "",
        f"Command: `{report['command']}`; {report['seconds'] / 60:.1f} min on {os.cpu_count()} cores.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--depths", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--transfer", type=int, default=4000, help="transfer sentences (2x the labelled 2,000)"
    )
    parser.add_argument(
        "--teacher", default=None, help="a fine-tuned sentences teacher (default: fine-tune one)"
    )
    parser.add_argument("--latency_runs", type=int, default=30)
    parser.add_argument("--work_dir", default="runs/quantization_aware")
    parser.add_argument("--output", default=None, help="folder for quantization_aware.json / .md")
    cli = parser.parse_args()
    start = time.perf_counter()
    teacher, runs, sweeps = cli.teacher, {}, {}
    for seed in cli.seeds:
        argv = sweep_argv(cli, seed, teacher)
        config = parse_config(SWEEP_TYPES, argv)
        result = sweep(*config)
        seed_dir = Path(cli.work_dir) / f"seed-{seed}"
        teacher = teacher or str(seed_dir / "teacher")
        sweep_args = config[3]
        sweeps[seed] = result
        runs[seed] = {}
        for depth in cli.depths:
            points = {p["variant"]: p for p in result["points"] if p["depth"] == depth}
            # A variant whose export failed its gate is missing from the sweep (its note says why): None here.
            run = {
                v: points[v]["accuracy"] if v in points else None for v in ("fp32", "int8 PTQ", "int8 QAT")
            }
            run["int8 PTQ choice"] = export_choice(seed_dir / f"layers-{depth}" / "onnx")
            run["int8 QAT choice"] = export_choice(seed_dir / f"layers-{depth}" / "onnx-qat")
            run["notes"] = result["notes"]
            run |= control(config, seed_dir, depth, teacher, sweep_args.quantization_aware_epochs,
                           sweep_args.quantization_aware_learning_rate)  # fmt: skip
            runs[seed][depth] = run
            print(f"[quantization_aware] seed {seed}, {depth}L: " + ", ".join(f"{v} {run[v]}" for v in VARIANTS),
                  flush=True)  # fmt: skip
    first = sweeps[cli.seeds[0]]
    report = {
        "command": "python benchmarks/quantization_aware.py "
        + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(cli).items()
            if v is not None
        ),  # fmt: skip
        "seeds": cli.seeds,
        "depths": cli.depths,
        "transfer": cli.transfer,
        "teacher_accuracy": first["teacher_accuracy"],
        "test_size": first["benchmark_settings"]["num_examples"],
        "quantization_aware_epochs": sweep_args.quantization_aware_epochs,
        "quantization_aware_learning_rate": sweep_args.quantization_aware_learning_rate,
        "runs": runs,
        "summary": summarise(runs, cli.depths),
        "seconds": time.perf_counter() - start,
    }
    text = markdown(report)
    print(text)
    if cli.output:
        out = Path(cli.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "quantization_aware.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "quantization_aware.md").write_text(text + "\n")
        sweep_out = out / "sweep_bbc_news_sentences"
        sweep_out.mkdir(exist_ok=True)
        for name in (SWEEP_JSON, SWEEP_MARKDOWN, SWEEP_PLOT):
            shutil.copy(Path(cli.work_dir) / f"seed-{cli.seeds[0]}" / name, sweep_out / name)


if __name__ == "__main__":
    main()
