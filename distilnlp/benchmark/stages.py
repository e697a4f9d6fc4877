"""Accuracy, latency, throughput and size of every stage of a distillation run, measured in one run.

    stages = [
        torch_stage("teacher", teacher, tokenizer),
        torch_stage("student", student, tokenizer),
        onnx_stage("student int8", "runs/student-onnx", "model_quantized.onnx", tokenizer),
    ]
    results = run_benchmark(stages, texts, labels, tokenizer, BenchmarkArguments(output_dir="runs/bench"))

The first stage is the reference (the teacher) for speedup, size ratio and accuracy retained. Stages are timed
one after the other, never interleaved. Timings on a shared machine are noisy: compare the ratios of one run,
not absolute numbers across runs, and check the recorded load average (busy cores can slow PyTorch's OpenMP
threads by an order of magnitude).
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..distill.teachers import align_logits, label_names_of, label_permutation
from ..runs.artifacts import BENCHMARK_JSON_FILE as JSON_FILE
from ..runs.artifacts import BENCHMARK_MARKDOWN_FILE as MARKDOWN_FILE
from ..runs.artifacts import BENCHMARK_PLOT_FILE as PLOT_FILE
from ..runs.artifacts import CORE_PACKAGES, ONNX_FILE, ONNX_PACKAGES, package_versions
from ..runs.model_files import auto_model_class, folder_task, load_model_folder, saved_tokenizer
from .metrics import classification_scores
from .report import add_reference_ratios, markdown_table, plot
from .tokens import encode_words, is_word_lists, token_scores

logger = logging.get_logger(__name__)

Batch = Mapping[str, np.ndarray]
PredictFn = Callable[[Batch], np.ndarray]


# Every stage record in benchmark.json has exactly these keys.
METRIC_KEYS = (
    "name",
    "accuracy",
    "f1",
    "latency_p50_ms",
    "latency_p95_ms",
    "throughput_samples_per_s",
    "size_mb",
    "num_parameters",
    "num_threads",
    "speedup",
    "size_ratio",
    "accuracy_retained",
)


@dataclass
class BenchmarkArguments:
    """Arguments of `distilnlp benchmark` (parse with `transformers.HfArgumentParser`)."""

    output_dir: str = field(
        metadata={"help": "Folder to write benchmark.json, benchmark.md and benchmark.png to."}
    )
    sequence_length: int = field(
        default=128, metadata={"help": "Inputs are padded/truncated to this many tokens for timing."}
    )
    batch_size: int = field(
        default=32, metadata={"help": "Batch size of the throughput (and accuracy) runs."}
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "Intra-op threads for PyTorch and ONNX Runtime. Default: os.cpu_count()."},
    )
    warmup: int = field(
        default=5,
        metadata={"help": "Untimed batch-1 calls before the latency runs (one batch before throughput)."},
    )
    latency_runs: int = field(
        default=50, metadata={"help": "Timed batch-1 calls per stage (latency p50/p95)."}
    )
    throughput_runs: int = field(
        default=5, metadata={"help": "Timed batch_size calls per stage (throughput)."}
    )

    def __post_init__(self):
        if self.num_threads is None:
            self.num_threads = os.cpu_count() or 1
        for name in ("sequence_length", "batch_size", "num_threads", "latency_runs", "throughput_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0; got {self.warmup}.")


@dataclass
class Stage:
    """One model to measure.

    `predict_fn` maps a tokenized batch (numpy int arrays, shape (batch, seq)) to logits (batch, num_labels).
    `tokenizer`, when set, replaces the benchmark's tokenizer for this stage (a student with its own vocabulary,
    a trimmed export). `num_threads` records the intra-op threads a stage was built with (ONNX Runtime fixes them
    per session). `label_names`, the model's class names in id order, align its logits with the other stages'
    and the labels' by name (`label_orders`).
    """

    name: str
    predict_fn: PredictFn
    size_bytes: int
    num_parameters: int
    tokenizer: PreTrainedTokenizerBase | None = None
    num_threads: int | None = None
    label_names: list[str] | None = None


def own_tokenizer(folder: str | os.PathLike, stage: str) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in a stage's model folder; None (with a warning) when it has none."""
    try:
        return saved_tokenizer(folder)
    except (OSError, ValueError, TypeError) as err:
        error = str(err).splitlines()[0][:100]
    logger.warning(
        f"Stage {stage!r}: {folder} has no tokenizer ({error}); its texts are encoded with the benchmark's "
        "tokenizer (the teacher's)."
    )
    return None


def _weights_size(model: PreTrainedModel, folder: Path | None) -> int:
    """Bytes of the weights file in `folder`, or (no folder) of the model's tensors in memory."""
    # Not `model.name_or_path`: a model built from another's config inherits that model's path.
    for name in ("model.safetensors", "pytorch_model.bin"):
        if folder is not None and (folder / name).is_file():
            return (folder / name).stat().st_size
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # tied weights count once
    return sum(t.numel() * t.element_size() for t in tensors.values())


def torch_stage(
    name: str,
    model: PreTrainedModel | str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Stage:
    """A PyTorch sequence classifier as a `Stage`: a model (size: its tensors' bytes) or a folder to load it
    from (size: its weights file; tokenizer: the folder's own unless `tokenizer` is given)."""
    folder = None
    if not isinstance(model, PreTrainedModel):
        folder = Path(model)
        model = load_model_folder(auto_model_class(folder_task(folder)), folder, name)
        if tokenizer is None:
            tokenizer = own_tokenizer(folder, name)
    model.eval()
    accepted = set(inspect.signature(model.forward).parameters)

    def predict(batch: Batch) -> np.ndarray:
        inputs = {k: torch.as_tensor(v) for k, v in batch.items() if k in accepted}
        with torch.inference_mode():
            return model(**inputs).logits.float().numpy()

    size = _weights_size(model, folder)
    return Stage(
        name, predict, size, model.num_parameters(), tokenizer, label_names=label_names_of(model.config)
    )


def onnx_num_parameters(path: str | os.PathLike) -> int:
    """Number of elements in the initializers (weights, and int8 scales/zero points) of an ONNX graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return int(sum(np.prod(init.dims, dtype=np.int64) for init in graph.initializer))


def onnx_stage(
    name: str,
    onnx_model_dir: str | os.PathLike,
    file_name: str = ONNX_FILE,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    num_threads: int | None = None,
) -> Stage:
    """An ONNX sequence classifier in `onnx_model_dir` (as written by `export_model`) as a `Stage`, run by
    `OnnxClassifier` on the CPU provider with `num_threads` intra-op threads (default `os.cpu_count()`, like
    `BenchmarkArguments.num_threads`) and one inter-op thread. Texts are encoded with the tokenizer saved in the
    folder (a trimmed export's own ids) unless `tokenizer` is given."""
    from ..onnx.runtime import OnnxClassifier

    num_threads = num_threads or os.cpu_count() or 1
    model = OnnxClassifier.from_pretrained(onnx_model_dir, file_name, num_threads=num_threads)
    if tokenizer is None:
        tokenizer = own_tokenizer(onnx_model_dir, name)

    def predict(batch: Batch) -> np.ndarray:
        return model.logits(batch)

    path = Path(onnx_model_dir) / file_name
    return Stage(
        name,
        predict,
        path.stat().st_size,
        onnx_num_parameters(path),
        tokenizer,
        num_threads,
        label_names_of(model.config),
    )


# ------------------------------------------------------------------------------------------------ measuring


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], length: int, pad_to_length: bool
) -> Batch:
    if is_word_lists(texts):  # token classification: sentences as words
        return dict(encode_words(tokenizer, texts, length, pad_to_length))
    enc = tokenizer(
        list(texts),
        padding="max_length" if pad_to_length else True,
        truncation=True,
        max_length=length,
        return_tensors="np",
    )
    return dict(enc)


def _timings(fn: Callable[[], Any], warmup: int, runs: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times


def _same_classes(names: Sequence[str], other: Sequence[str]) -> bool:
    try:
        label_permutation(list(names), other)
    except ValueError:
        return False
    return True


def label_orders(stages: Sequence[Stage], label_names: Sequence[str] | None = None) -> list[list[int] | None]:
    """Per stage, the order putting its logits into the labels' class order, matched by class name
    (`teachers.label_permutation`; placeholder names `LABEL_i` match by index).

    Every stage must predict the first named stage's classes (ValueError naming both lists). The classes are
    ordered as `label_names` (the data's) when every stage has those classes, else as the first stage's.
    """
    named = [s for s in stages if s.label_names is not None]
    if not named:
        return [None] * len(stages)
    reference = named[0]
    for stage in named[1:]:
        if not _same_classes(stage.label_names, reference.label_names):
            raise ValueError(
                f"Stage {stage.name!r} predicts the classes {stage.label_names} but {reference.name!r} predicts "
                f"{reference.label_names}: the benchmark compares models of the same classes."
            )
    target = list(reference.label_names)
    if label_names is not None:
        if all(_same_classes(s.label_names, label_names) for s in named):
            target = [str(name) for name in label_names]
        else:
            logger.warning(
                f"The models predict {target} but the data has the labels {list(label_names)}; "
                "predictions are scored by class index."
            )
    return [None if s.label_names is None else label_permutation(s.label_names, target) for s in stages]


def _measure(
    stage: Stage,
    texts: Sequence[str],
    labels: Sequence[int],
    tokenizer,
    args: BenchmarkArguments,
    label_order: list[int] | None = None,
    names: Sequence[str] | None = None,
):
    tokenizer = stage.tokenizer or tokenizer
    if is_word_lists(texts):  # entity F1 (seqeval) and word accuracy, each word read at its first subword
        scores = token_scores(stage, label_order, tokenizer, texts, labels, names, args)
    else:
        predictions = []
        for i in range(0, len(texts), args.batch_size):
            batch = _encode(
                tokenizer, texts[i : i + args.batch_size], args.sequence_length, pad_to_length=False
            )
            predictions.append(align_logits(stage.predict_fn(batch), label_order).argmax(-1))
        scores = classification_scores(np.concatenate(predictions), np.asarray(labels))

    # Timed inputs are exactly sequence_length tokens, so every stage does the same work.
    single = _encode(tokenizer, texts[:1], args.sequence_length, pad_to_length=True)
    latency = _timings(lambda: stage.predict_fn(single), args.warmup, args.latency_runs) * 1000
    batch_texts = [texts[i % len(texts)] for i in range(args.batch_size)]
    full = _encode(tokenizer, batch_texts, args.sequence_length, pad_to_length=True)
    batch_times = _timings(lambda: stage.predict_fn(full), min(args.warmup, 1), args.throughput_runs)

    if stage.num_threads is not None and stage.num_threads != args.num_threads:
        logger.warning(
            f"Stage {stage.name!r} runs {stage.num_threads} threads, the benchmark {args.num_threads}."
        )
    return {
        "name": stage.name,
        "accuracy": scores["accuracy"],
        "f1": scores["f1"],
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p95_ms": float(np.percentile(latency, 95)),
        "throughput_samples_per_s": float(args.batch_size * args.throughput_runs / batch_times.sum()),
        "size_mb": stage.size_bytes / 1e6,
        "num_parameters": int(stage.num_parameters),
        "num_threads": stage.num_threads or args.num_threads,
    }


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None


def run_benchmark(
    stages: Sequence[Stage],
    texts: Sequence[str],
    labels: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    args: BenchmarkArguments,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure every stage on (texts, labels) in one run; write benchmark.json/.md/.png to `args.output_dir`.

    Each stage encodes the texts with its own tokenizer (`Stage.tokenizer`), else `tokenizer`; its predictions
    are matched to `labels` by class name (`label_orders`; `label_names`: the labels' class names in id order).

    Per stage: accuracy and macro-F1; p50/p95 latency (ms) at batch 1 and throughput (samples/s) at
    `batch_size`, inputs padded to `sequence_length`, after `warmup` calls, with `num_threads` threads; size (MB)
    and parameter count; and against the first stage: speedup (its p50 / this p50), size ratio (this size / its
    size) and accuracy retained (this accuracy / its accuracy).

    Returns `{"settings": ..., "stages": [...], "markdown": table}` (benchmark.json holds all but the table).
    """
    if not stages:
        raise ValueError("run_benchmark needs at least one stage.")
    if len(texts) != len(labels) or not texts:
        raise ValueError(
            f"texts and labels must be non-empty and equally long; got {len(texts)}, {len(labels)}."
        )
    texts = list(texts)
    orders = label_orders(stages, label_names)
    token_task = is_word_lists(texts)  # then label_names (the tags in id order) are required
    load_before = _load_average()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.num_threads)
    try:
        records = [
            _measure(s, texts, labels, tokenizer, args, order, label_names)
            for s, order in zip(tqdm(stages, desc="benchmark", unit="stage"), orders, strict=True)
        ]
    finally:
        torch.set_num_threads(previous_threads)

    # Token classification: "accuracy" is word accuracy, "f1" entity F1, and the share kept is of entity F1.
    reference = add_reference_ratios(records, "f1" if token_task else "accuracy")

    results: dict[str, Any] = {
        "settings": asdict(args)
        | {
            "num_examples": len(texts),
            "task": "token-classification" if token_task else "sequence-classification",
            "reference_stage": reference["name"],
            # Other processes on the cores distort timings badly (OpenMP threads spin-wait on a descheduled
            # peer): a load average above the core count says to rerun on a quiet machine.
            "load_average_before": load_before,
            "load_average_after": _load_average(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "versions": package_versions(*CORE_PACKAGES, *ONNX_PACKAGES),
        },
        "stages": records,
    }
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / JSON_FILE).write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(records, token_task)
    (output_dir / MARKDOWN_FILE).write_text(table)
    plot(records, output_dir / PLOT_FILE)
    return results | {"markdown": table}
