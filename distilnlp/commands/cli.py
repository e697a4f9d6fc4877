"""`distilnlp <command> [recipe.yaml] [--flag value ...]`: flags override the recipe's values."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable

from safetensors import SafetensorError
from transformers import TrainingArguments

from ..data import DataArguments
from ..distill.arguments import DistillationTrainingArguments
from ..distill.stage_arguments import StageTrainingArguments
from .config import explicit_values, parse_config

USAGE = """usage: distilnlp <command> [recipe.yaml] [--flag value ...]

commands:
  demo       fine-tune the packaged MiniLM teacher on BBC News, distill a student, evaluate both
  finetune   fine-tune a pretrained encoder into a teacher            (FinetuneArguments + data + Trainer flags)
  distill    distill a student from a fine-tuned teacher               (DistillArguments + data + distillation flags)
  distill-general  task-agnostic distillation of a student encoder on unlabelled text
             (MiniLMv2); its output folder is a student for `distill --student DIR`
  export     MODEL_DIR --output OUT_DIR: ONNX export, int8 quantization, parity checks (ExportArguments + data)
  benchmark  accuracy, latency, throughput and size of teacher / student / ONNX student in one run
  cache-teacher  precompute the teacher's logits (--teacher_cache DIR) so `distill` need not run it
  sweep      RECIPE --student_layers 1,2,3: distill, export (fp32 / int8 PTQ / int8 QAT) and benchmark each
             depth; accuracy-latency table + plot with the Pareto front, and the smallest model that keeps
             --min_retention of the teacher's accuracy
  search     tune temperature / alpha / loss weights with Optuna; writes the best as a runnable recipe
  recipes    list the bundled recipes (use one by name: distilnlp distill distill_bbc_news)
  distill-embeddings   distill a small sentence embedder from a sentence-transformers teacher on unlabelled text
  evaluate-embeddings  MODEL [--teacher minilm]: BBC News topic / sentence classification, clustering, retrieval
  (`distilnlp export` of a sentence-transformers folder writes an ONNX embedder: fp32 + cosine-gated int8)

`distilnlp <command> --help` lists every flag; a YAML recipe may set any of them (see recipes/).
`distilnlp --version` prints the version.
Errors print one line (exit status 2: wrong arguments, 1: the command failed); --debug or DISTILNLP_DEBUG=1
prints the traceback too.
Multi-process: accelerate launch --multi_gpu --num_processes 2 -m distilnlp distill recipes/distill_bbc_news.yaml
"""


class UsageError(ValueError):
    """The command line or recipe is wrong: exit status 2."""


def parse(dataclass_types, argv: list[str], prog: str) -> tuple:
    """`parse_config`, with argparse's and the dataclasses' complaints turned into one-line `UsageError`s."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = parse_config(dataclass_types, argv, prog=prog)
        sys.stderr.write(captured.getvalue())  # warnings raised while parsing
        for instance in parsed:
            if isinstance(instance, TrainingArguments):
                check_training_length(instance)
        return parsed
    except SystemExit as exit_:
        if not exit_.code:  # --help
            raise
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        message = lines[-1] if lines else f"invalid arguments (exit {exit_.code})"
        message = message.removeprefix(f"{prog}: error: ")
        hint = "" if "--help`" in message else f"; see `{prog} --help`."  # _unknown's message has its own
        raise UsageError(message + hint) from None
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from error


def check_training_length(args: TrainingArguments) -> None:
    """A run of no steps would save the untrained model as a finished run: refuse it."""
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"max_steps must be > 0 (or -1: train for num_train_epochs), got {args.max_steps}.")
    epochs = args.num_train_epochs
    if args.max_steps < 0 and not (math.isfinite(epochs) and epochs > 0):
        raise ValueError(f"num_train_epochs must be a finite number > 0, got {epochs}.")


# The failures a command reports in one line (the package's own errors subclass these).
HANDLED_ERRORS = (ValueError, OSError, ImportError, FloatingPointError)
DEBUG_OPTIONS = ("underflow_overflow", "tpu_metrics_debug")  # TrainingArguments' own --debug values


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Remove distilnlp's `--debug` from argv (TrainingArguments' `--debug underflow_overflow` stays)."""
    debug = os.environ.get("DISTILNLP_DEBUG", "") not in ("", "0", "false")
    kept = []
    for i, token in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if token == "--debug" and not any(option in following for option in DEBUG_OPTIONS):
            debug = True
            continue
        kept.append(token)
    return debug, kept


# How a write into a full disk surfaces: OSError ENOSPC (Python), "os error 28" (safetensors' Rust writer),
# torch.save's zip writer failing its write check (`[enforce fail at inline_container.cc:672] . unexpected pos
# 576 vs 534`, or `PytorchStreamWriter failed writing file ...`; torch gives no errno).
DISK_FULL_TEXTS = ("No space left on device", "os error 28", "PytorchStreamWriter failed writing")
TRAINING_COMMANDS = (
    "demo",
    "finetune",
    "distill",
    "distill-general",
    "distill-embeddings",
    "search",
    "sweep",
)


def _chain(error: BaseException | None):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def disk_full(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) is a write that failed for want of disk space."""
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        or any(t in str(e) for t in DISK_FULL_TEXTS)
        or ("inline_container.cc" in str(e) and "unexpected pos" in str(e))
        for e in _chain(error)
    )


def reported(error: BaseException) -> bool:
    """Whether the CLI reports `error` in one line (else the traceback is the report)."""
    return isinstance(error, (*HANDLED_ERRORS, SafetensorError)) or disk_full(error)


def one_line(error: BaseException, command: str = "distill") -> str:
    """What went wrong, where, and the fix, on one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    if disk_full(error):
        if "No space left on device" not in text:
            text = f"No space left on device ({type(error).__name__}: {text})"
        text += ". Free some disk space and run the same command again" + (
            ": it resumes from the last complete checkpoint" if command in TRAINING_COMMANDS else ""
        )
    elif isinstance(error, SafetensorError):  # a load that `load_model_folder` did not wrap
        text = (
            f"a .safetensors weights file does not load ({text}): it is truncated or damaged; re-save the "
            "model (model.save_pretrained) or download / copy it again"
        )
    return text


def _finetune(argv: list[str]) -> int:
    from .arguments import FinetuneArguments
    from .stages import finetune

    model_args, data_args, training_args = parse(
        (FinetuneArguments, DataArguments, StageTrainingArguments), argv, prog="distilnlp finetune"
    )
    results = finetune(model_args, data_args, training_args)
    if "test_recall" in results:  # token classification: entity-level scores (seqeval)
        print(
            f"teacher test entity F1 {results['test_f1']:.4f}, token accuracy {results['test_accuracy']:.4f}"
        )
    else:
        print(f"teacher test accuracy {results['test_accuracy']:.4f}, macro-F1 {results['test_f1']:.4f}")
    return 0


def _distill(argv: list[str]) -> int:
    from .arguments import DistillArguments
    from .stages import distill

    distill_args, data_args, training_args = parse(
        (DistillArguments, DataArguments, DistillationTrainingArguments), argv, prog="distilnlp distill"
    )
    results = distill(distill_args, data_args, training_args)
    if "student_test_recall" in results:  # token classification: entity-level F1 (seqeval)
        teacher = results.get("teacher_test_f1")  # none with --evaluate_teacher false
        print(
            (f"teacher test entity F1 {teacher:.4f}, " if teacher is not None else "")
            + f"student test entity F1 {results['student_test_f1']:.4f}"
        )
        return 0
    teacher = results.get("teacher_test_accuracy")  # none with soft labels from a file
    print(
        (f"teacher test accuracy {teacher:.4f}, " if teacher is not None else "")
        + f"student test accuracy {results['student_test_accuracy']:.4f}"
    )
    return 0


def _distill_general(argv: list[str]) -> int:
    from ..distill.general import GeneralDistillationArguments
    from .general import GeneralArguments, distill_general

    general_args, training_args = parse(
        (GeneralArguments, GeneralDistillationArguments), argv, prog="distilnlp distill-general"
    )
    results = distill_general(general_args, training_args)
    print(
        f"general student saved to {training_args.output_dir}: {results['steps']} steps, "
        f"{results['windows_seen']} windows, train loss {results['train_loss']:.4f}"
    )
    return 0


def _demo(argv: list[str]) -> int:
    from .demo import DemoArguments, run_demo

    (demo_args,) = parse((DemoArguments,), argv, prog="distilnlp demo")
    run_demo(demo_args)
    return 0


def _export(argv: list[str]) -> int:
    from ..onnx import ExportArguments
    from .deploy import ExportTargetArguments, export_with_task_data
    from .embeddings import looks_like_sentence_export

    if looks_like_sentence_export(argv):
        return _export_embeddings(argv)

    if argv and not argv[0].startswith("-") and not argv[0].endswith((".yaml", ".yml")):
        argv = ["--model_dir", argv[0], *argv[1:]]  # `distilnlp export MODEL_DIR --output OUT_DIR`
    export_args, data_args, target_args = parse(
        (ExportArguments, DataArguments, ExportTargetArguments), argv, prog="distilnlp export"
    )
    result = export_with_task_data(export_args, data_args, overwrite=target_args.overwrite)
    for name, report in result.parity.items():
        print(f"parity check passed, {name} vs its reference: {report}")
    print(f"ONNX model written to {result.output_dir}")
    return 0


def _benchmark(argv: list[str]) -> int:
    from ..benchmark.stages import BenchmarkArguments
    from .deploy import BenchmarkModels, benchmark_models

    models, data_args, bench_args = parse(
        (BenchmarkModels, DataArguments, BenchmarkArguments), argv, prog="distilnlp benchmark"
    )
    results = benchmark_models(models, data_args, bench_args)
    print(results["markdown"])
    return 0


def _cache_teacher(argv: list[str]) -> int:
    from .arguments import DistillArguments
    from .cache_teacher import cache_teacher

    distill_args, data_args, training_args = parse(
        (DistillArguments, DataArguments, DistillationTrainingArguments), argv, prog="distilnlp cache-teacher"
    )
    cache, built = cache_teacher(distill_args, data_args, training_args)
    splits = ", ".join(f"{name} {s['rows']}" for name, s in cache.metadata["splits"].items())
    state = "written" if built else "up to date"
    print(f"teacher cache {cache.path} {state}: {splits} examples, fingerprint {cache.fingerprint[:16]}")
    return 0


def _search(argv: list[str]) -> int:
    from .arguments import DistillArguments
    from .search import SearchArguments, search

    types = (DistillArguments, DataArguments, DistillationTrainingArguments, SearchArguments)
    distill_args, data_args, training_args, search_args = parse(types, argv, prog="distilnlp search")
    result = search(distill_args, data_args, training_args, search_args, explicit_values(types, argv))
    best = result["best"]
    print(f"best {result['metric']} {best['value']:.4f} with {best['params']}; recipe: {result['recipe']}")
    return 0


def _sweep(argv: list[str]) -> int:
    from .sweep import SWEEP_TYPES, sweep

    result = sweep(*parse(SWEEP_TYPES, argv, prog="distilnlp sweep"))
    status = "" if result["chosen"]["meets_min_retention"] else " (none meets min_retention)"
    print(f"chosen model{status}: {result['chosen']['name']}")
    return 0


def _recipes(argv: list[str]) -> int:
    from .recipes import bundled_recipes, describe

    if argv:
        print(f"distilnlp recipes takes no arguments, got {' '.join(argv)}", file=sys.stderr)
        return 2
    for name, path in bundled_recipes().items():
        print(f"{name:28s} {describe(path)}")
    print("\nRun one by name (`distilnlp distill distill_bbc_news`) or copy it: `distilnlp recipes` lists")
    print(f"the files in {next(iter(bundled_recipes().values())).parent}.")
    return 0


def _export_embeddings(argv: list[str]) -> int:
    from ..onnx.embedding_export import EmbeddingExportArguments, export_embedder
    from .embeddings import export_texts

    if argv and not argv[0].startswith("-"):
        argv = ["--model_dir", argv[0], *argv[1:]]
    (args,) = parse((EmbeddingExportArguments,), argv, prog="distilnlp export")
    summary = export_embedder(args, export_texts(args.gate_texts))
    print(f"fp32 parity: max |difference| {summary['parity']['fp32']['max_abs_diff']:.2e}")
    if "int8" in summary:
        chosen = next(a for a in summary["int8"]["attempts"] if a["name"] == summary["int8"]["chosen"])
        print(f"int8 graph {chosen['name']}: mean cosine to fp32 {chosen['mean_cosine']:.4f}")
    print(f"ONNX embedder written to {args.output_dir}")
    return 0


def _distill_embeddings(argv: list[str]) -> int:
    from ..distill.embedding_trainer import EmbeddingDistillationArguments
    from .embedding_distill import EmbeddingDistillArguments, distill_embeddings

    args, training_args = parse(
        (EmbeddingDistillArguments, EmbeddingDistillationArguments), argv, prog="distilnlp distill-embeddings"
    )
    record = distill_embeddings(args, training_args)
    print(f"student ({record['texts']} texts) saved to {training_args.output_dir}")
    return 0


def _evaluate_embeddings(argv: list[str]) -> int:
    from .embeddings import EvaluateEmbeddingsArguments, evaluate_embeddings

    if argv and not argv[0].startswith("-"):
        argv = ["--model", argv[0], *argv[1:]]
    (args,) = parse((EvaluateEmbeddingsArguments,), argv, prog="distilnlp evaluate-embeddings")
    print(evaluate_embeddings(args)["markdown"])
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "demo": _demo,
    "finetune": _finetune,
    "distill": _distill,
    "distill-general": _distill_general,
    "export": _export,
    "benchmark": _benchmark,
    "cache-teacher": _cache_teacher,
    "search": _search,
    "sweep": _sweep,
    "recipes": _recipes,
    "distill-embeddings": _distill_embeddings,
    "evaluate-embeddings": _evaluate_embeddings,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"distilnlp {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"distilnlp: unknown command {command!r}; choose one of {', '.join(COMMANDS)}.\n\n{USAGE}",
            file=sys.stderr,
        )
        return 2
    debug, rest = _debug_requested(rest)
    # distilnlp's own progress at INFO; other libraries' INFO lines (ONNX Runtime's quantizer logs one per
    # tensor through the root logger) stay hidden.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("distilnlp").setLevel(logging.INFO)
    try:
        return COMMANDS[command](rest)
    except Exception as error:
        if not reported(error):
            raise
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (--debug shows the traceback)"
        print(f"distilnlp {command}: error: {one_line(error, command)}{hint}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    except KeyboardInterrupt:
        print(
            f"distilnlp {command}: interrupted; run it again to resume from the last checkpoint.",
            file=sys.stderr,
        )
        return 130
