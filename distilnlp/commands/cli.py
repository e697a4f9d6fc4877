"""`distilnlp <command> [recipe.yaml] [--flag value ...]`: flags override the recipe's values."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from transformers import TrainingArguments

from ..data import DataArguments
from ..training_args import DistillationTrainingArguments
from .config import parse_config

USAGE = """usage: distilnlp <command> [recipe.yaml] [--flag value ...]

commands:
  demo       fine-tune the packaged MiniLM teacher on BBC News, distill a student, evaluate both
  finetune   fine-tune a pretrained encoder into a teacher            (FinetuneArguments + data + Trainer flags)
  distill    distill a student from a fine-tuned teacher               (DistillArguments + data + distillation flags)
  export     MODEL_DIR --output OUT_DIR: ONNX export, int8 quantization, parity checks (ExportArguments + data)
  benchmark  accuracy, latency, throughput and size of teacher / student / ONNX student in one run
  cache-teacher  precompute the teacher's logits (--teacher_cache DIR) so `distill` need not run it
  search     tune temperature / alpha / loss weights with Optuna; writes the best as a runnable recipe

`distilnlp <command> --help` lists every flag; a YAML recipe may set any of them (see recipes/).
Multi-process: accelerate launch --multi_gpu --num_processes 2 -m distilnlp distill recipes/distill_bbc_news.yaml
"""


def _finetune(argv: list[str]) -> int:
    from .stages import FinetuneArguments, finetune

    model_args, data_args, training_args = parse_config(
        (FinetuneArguments, DataArguments, TrainingArguments), argv, prog="distilnlp finetune"
    )
    results = finetune(model_args, data_args, training_args)
    print(f"teacher test accuracy {results['test_accuracy']:.4f}, macro-F1 {results['test_f1']:.4f}")
    return 0


def _distill(argv: list[str]) -> int:
    from .stages import DistillArguments, distill

    distill_args, data_args, training_args = parse_config(
        (DistillArguments, DataArguments, DistillationTrainingArguments), argv, prog="distilnlp distill"
    )
    results = distill(distill_args, data_args, training_args)
    teacher = results.get("teacher_test_accuracy")  # none with soft labels from a file
    print(
        (f"teacher test accuracy {teacher:.4f}, " if teacher is not None else "")
        + f"student test accuracy {results['student_test_accuracy']:.4f}"
    )
    return 0


def _demo(argv: list[str]) -> int:
    from .demo import DemoArguments, run_demo

    (demo_args,) = parse_config((DemoArguments,), argv, prog="distilnlp demo")
    run_demo(demo_args)
    return 0


def _export(argv: list[str]) -> int:
    from ..onnx import ExportArguments
    from .deploy import export_with_task_data

    if argv and not argv[0].startswith("-") and not argv[0].endswith((".yaml", ".yml")):
        argv = ["--model_dir", argv[0], *argv[1:]]  # `distilnlp export MODEL_DIR --output OUT_DIR`
    export_args, data_args = parse_config((ExportArguments, DataArguments), argv, prog="distilnlp export")
    result = export_with_task_data(export_args, data_args)
    for name, report in result.parity.items():
        print(f"parity check passed, {name} vs its reference: {report}")
    print(f"ONNX model written to {result.output_dir}")
    return 0


def _benchmark(argv: list[str]) -> int:
    from ..benchmark import BenchmarkArguments
    from .deploy import BenchmarkModels, benchmark_models

    models, data_args, bench_args = parse_config(
        (BenchmarkModels, DataArguments, BenchmarkArguments), argv, prog="distilnlp benchmark"
    )
    results = benchmark_models(models, data_args, bench_args)
    print(results["markdown"])
    return 0


def _cache_teacher(argv: list[str]) -> int:
    from .cache_teacher import cache_teacher
    from .stages import DistillArguments

    distill_args, data_args, training_args = parse_config(
        (DistillArguments, DataArguments, DistillationTrainingArguments), argv, prog="distilnlp cache-teacher"
    )
    cache, built = cache_teacher(distill_args, data_args, training_args)
    splits = ", ".join(f"{name} {s['rows']}" for name, s in cache.metadata["splits"].items())
    state = "written" if built else "up to date"
    print(f"teacher cache {cache.path} {state}: {splits} examples, fingerprint {cache.fingerprint[:16]}")
    return 0


def _search(argv: list[str]) -> int:
    from .search import SearchArguments, recipe_values, search
    from .stages import DistillArguments

    types = (DistillArguments, DataArguments, DistillationTrainingArguments, SearchArguments)
    distill_args, data_args, training_args, search_args = parse_config(types, argv, prog="distilnlp search")
    result = search(distill_args, data_args, training_args, search_args, recipe_values(argv, types))
    best = result["best"]
    print(f"best {result['metric']} {best['value']:.4f} with {best['params']}; recipe: {result['recipe']}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "demo": _demo,
    "finetune": _finetune,
    "distill": _distill,
    "export": _export,
    "benchmark": _benchmark,
    "cache-teacher": _cache_teacher,
    "search": _search,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"distilnlp: unknown command {command!r}; choose one of {', '.join(COMMANDS)}.\n\n{USAGE}",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return COMMANDS[command](rest)
