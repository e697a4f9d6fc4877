"""The export before and after the move off optimum-onnx, on the same student, in one run.

Both exports run `distilnlp export STUDENT` with their own code: "before" with another interpreter and checkout
(the Optimum path: transformers 4.57 + optimum-onnx 0.1), "after" with this one (torch.onnx + onnxruntime). Then,
in this process and interleaved (A B A B ...) so that the machine's drift hits both alike:

- int8 latency (p50) at batch 1 and 32, `--sequence_length` real tokens, and its fraction of this CPU's int8
  matmul peak (`benchmarks/int8_peak.py`: one MatMulInteger on large shapes; MACs counted from each graph);
- test accuracy of each int8 graph and of the fp32 PyTorch student, and each export's own parity figures.

    python benchmarks/export_stack.py --student distilnlp-demo/student \
        --before_python /path/to/old-venv/bin/python --before_checkout /path/to/old-checkout \
        --work_dir runs/export_stack --output benchmarks/results/export_stack

writes `<output>.json` and `<output>.md`; the two exports stay in `--work_dir`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from int8_peak import PEAK_SHAPES, matmul_peak, time_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilnlp.benchmark.macs import matmul_macs
from distilnlp.data import DataArguments, load_task_data
from distilnlp.onnx import OnnxClassifier
from distilnlp.runs.artifacts import EXPORT_SUMMARY_FILE, QUANTIZED_FILE, package_versions


def export(python: str, cwd: Path, student: Path, output: Path) -> float:
    """Run `distilnlp export` with `python` in `cwd`; seconds taken."""
    start = time.perf_counter()
    env = os.environ | {"PYTHONPATH": str(cwd)}
    subprocess.run(
        [python, "-m", "distilnlp", "export", str(student.resolve()), "--output", str(output.resolve())],
        cwd=cwd,
        env=env,
        check=True,
    )
    return time.perf_counter() - start


def accuracy(classify, batches, labels) -> float:
    predictions = np.concatenate([classify(batch).argmax(-1) for batch in batches])
    return float((predictions == labels).mean())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--before_python", required=True)
    parser.add_argument("--before_checkout", type=Path, required=True)
    parser.add_argument(
        "--output", type=Path, required=True, help="results path stem (.json and .md are added)"
    )
    parser.add_argument(
        "--work_dir", type=Path, default=Path("runs/export_stack"), help="where the exports go"
    )
    parser.add_argument("--sequence_length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="A B rounds of timing per batch size")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per round")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    threads = args.threads or os.cpu_count() or 1
    folders = {
        "before (optimum-onnx)": args.work_dir / "before",
        "after (torch.onnx + onnxruntime)": args.work_dir / "after",
    }
    seconds = {
        "before (optimum-onnx)": export(
            args.before_python, args.before_checkout, args.student, folders["before (optimum-onnx)"]
        ),
        "after (torch.onnx + onnxruntime)": export(
            sys.executable,
            Path(__file__).resolve().parent.parent,
            args.student,
            folders["after (torch.onnx + onnxruntime)"],
        ),
    }

    tokenizer = AutoTokenizer.from_pretrained(args.student)
    test = load_task_data(DataArguments())["test"]
    labels = np.asarray(test["label"])
    texts = list(test["text"])
    batches = [
        dict(tokenizer(texts[i : i + 32], padding=True, truncation=True, max_length=128, return_tensors="np"))
        for i in range(0, len(texts), 32)
    ]
    student = AutoModelForSequenceClassification.from_pretrained(args.student).eval()

    def torch_logits(batch):
        with torch.inference_mode():
            return student(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()

    load_before = os.getloadavg()[0]
    peak = matmul_peak(PEAK_SHAPES, threads, runs=10)
    report = {
        "student": str(args.student),
        "test_examples": len(labels),
        "fp32_pytorch_accuracy": accuracy(torch_logits, batches, labels),
        "sequence_length": args.sequence_length,
        "threads": threads,
        "peak_int8_gops": peak["gops"],
        "exports": {},
    }
    for name, folder in folders.items():
        summary = json.loads((folder / EXPORT_SUMMARY_FILE).read_text())
        choice = summary.get("int8_choice") or {}
        report["exports"][name] = {
            "export_seconds": seconds[name],
            "int8_size_bytes": (folder / QUANTIZED_FILE).stat().st_size,
            "int8_chosen": choice.get("chosen"),
            "fused_ops": choice.get("fused_ops"),
            "parity": summary["parity"],
            "int8_test_accuracy": accuracy(
                OnnxClassifier.from_pretrained(folder, QUANTIZED_FILE, num_threads=threads).logits,
                batches,
                labels,
            ),
            "versions": summary["versions"],
            "batches": {},
        }
    for batch in (1, 32):
        times = {name: [] for name in folders}
        for _ in range(args.rounds):
            for name, folder in folders.items():
                times[name].append(
                    time_model(folder / QUANTIZED_FILE, batch, args.sequence_length, threads, args.runs)
                )
        for name, folder in folders.items():
            macs = matmul_macs(folder / QUANTIZED_FILE, batch, args.sequence_length)["total"]
            p50 = float(np.median(times[name]))
            report["exports"][name]["batches"][str(batch)] = {
                "p50_ms": p50 * 1e3,
                "rounds_ms": [t * 1e3 for t in times[name]],
                "macs": macs,
                "fraction_of_int8_peak": 2 * macs / p50 / 1e9 / peak["gops"],
            }
        before, after = (report["exports"][name]["batches"][str(batch)]["rounds_ms"] for name in folders)
        report[f"after_over_before_batch{batch}"] = {
            "median": float(np.median(np.asarray(after) / np.asarray(before))),
            "per_round": [a / b for a, b in zip(after, before, strict=True)],
        }
    report |= {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "processor": platform.processor() or platform.machine(),
        "versions_here": package_versions("torch", "transformers", "onnx", "onnxruntime"),
    }
    (args.output.parent / f"{args.output.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output.parent / f"{args.output.name}.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"# Export before / after the move off optimum-onnx ({report['threads']} threads, sequence length "
        f"{report['sequence_length']}, int8 matmul peak {report['peak_int8_gops']:.1f} GOPS, load "
        f"{report['load_average_before']:.1f} -> {report['load_average_after']:.1f})",
        "",
        f"PyTorch fp32 student: test accuracy {report['fp32_pytorch_accuracy']:.4f} on {report['test_examples']} "
        "texts.",
        "",
        "| export | int8 chosen | int8 test acc. | size MB | b1 p50 ms | b1 % peak | b32 p50 ms | b32 % peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["exports"].items():
        b1, b32 = e["batches"]["1"], e["batches"]["32"]
        lines.append(
            f"| {name} | {e['int8_chosen']} | {e['int8_test_accuracy']:.4f} | {e['int8_size_bytes'] / 1e6:.1f} | "
            f"{b1['p50_ms']:.2f} | {100 * b1['fraction_of_int8_peak']:.1f} | {b32['p50_ms']:.1f} | "
            f"{100 * b32['fraction_of_int8_peak']:.1f} |"
        )
    lines += [
        "",
        f"after / before latency, median of paired rounds: batch 1 {report['after_over_before_batch1']['median']:.3f}, "
        f"batch 32 {report['after_over_before_batch32']['median']:.3f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
