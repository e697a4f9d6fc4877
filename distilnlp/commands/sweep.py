"""`distilnlp sweep RECIPE --student_layers 1,2,3`: the accuracy-latency frontier of student depths in one command.

For each depth: distill a student with the recipe (`<output_dir>/layers-<d>/student`), export it with the default
`distilnlp export` (fp32 `model.onnx` + int8 `model_quantized.onnx` through the fallback chain: "int8 PTQ"), and,
unless `--with_quantization_aware false`, go on distilling that student quantization-aware (`student-qat`:
`--quantization_aware_epochs` more epochs at `--quantization_aware_learning_rate`, the teacher still teaching)
and export its int8 graph ("int8 QAT"). Then every exported model and the PyTorch teacher (the reference) are measured in one
`run_benchmark` call (same test texts, threads and padding), and `sweep.json` / `sweep.md` / `sweep.png` name
the smallest model that keeps `--min_retention` of the teacher's test accuracy.

Every stage is skipped when its results already exist, so a killed sweep run again picks up where it stopped
(a half-trained student resumes from its last checkpoint, as `distilnlp distill` does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..benchmark.frontier import choose_model, markdown_table, pareto_front, plot_frontier
from ..benchmark.stages import BenchmarkArguments, run_benchmark, torch_stage
from ..data import TOKEN_TASK, DataArguments, detect_task
from ..distill.arguments import DistillationTrainingArguments
from ..distill.stage_arguments import StageTrainingArguments, list_items
from ..onnx import ExportArguments, ParityError
from ..runs.artifacts import DISTILL_RESULTS_FILE, EXPORT_SUMMARY_FILE, ONNX_FILE, QUANTIZED_FILE
from .arguments import DistillArguments, FinetuneArguments

logger = logging.getLogger(__name__)

SWEEP_JSON, SWEEP_MARKDOWN, SWEEP_PLOT = "sweep.json", "sweep.md", "sweep.png"


def parse_depths(value: str | int | list | None) -> list[int]:
    """'1,2,3', 2, [3, 1] or ['1,2', '3'] -> [1, 2, 3] (sorted, unique, each >= 1)."""
    items = list_items([value] if isinstance(value, int) else value)
    text = ",".join(items)
    if text == "":
        raise ValueError("sweep needs --student_layers, e.g. --student_layers 1,2,3.")
    try:
        depths = sorted({int(item) for item in items})
    except ValueError:
        raise ValueError(f"student_layers={text!r}: give comma-separated depths such as 1,2,3.") from None
    if depths[0] < 1:
        raise ValueError(f"student_layers must all be >= 1, got {text!r}.")
    return depths


@dataclass
class SweepDistillArguments(DistillArguments):
    """`DistillArguments` whose `student_layers` is the list of depths to sweep; one `DistillArguments` per
    depth is made with `for_depth`."""

    student_layers: list[int] | None = field(  # type: ignore[assignment]
        default=None,
        metadata={"help": "Student depths to sweep, comma-separated (1,2,3) or space-separated (1 2 3)."},
    )

    def __post_init__(self):
        depths = parse_depths(self.student_layers)  # also the text of a recipe or of `--student_layers 1,2`
        self.student_layers = None  # the parent checks one int depth
        super().__post_init__()
        self.student_layers = depths

    def for_depth(self, depth: int, **changes) -> DistillArguments:
        """The `DistillArguments` of one student: this depth, and `changes` (e.g. another teacher)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(DistillArguments) if f.init}
        return DistillArguments(**(values | {"student_layers": depth} | changes))


@dataclass
class SweepArguments:
    """What `distilnlp sweep` adds to a distill recipe. Training settings come from the recipe; the sweep's
    folders go under `--output_dir`."""

    min_retention: float = field(
        default=0.985,
        metadata={"help": "Chosen model: the smallest whose test accuracy is >= this x the teacher's."},
    )
    with_quantization_aware: bool = field(
        default=True,
        metadata={
            "help": "Also go on distilling each student quantization-aware and export its int8 graph (false: fp32 "
            "and PTQ int8 only)."
        },
    )
    quantization_aware_epochs: float = field(
        default=1.0,
        metadata={
            "help": "Epochs of quantization-aware distillation, starting from the distilled fp32 student."
        },
    )
    quantization_aware_learning_rate: float = field(
        default=3e-5,
        metadata={
            "help": "Learning rate of the quantization-aware distillation (a fine-tune of a trained student)."
        },
    )
    finetune_recipe: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune the teacher first with this recipe (bundled name or file) into <output_dir>/teacher, "
            "on the sweep's data; default: use the recipe's / --teacher folder as it is."
        },
    )
    teacher_epochs: float | None = field(
        default=None, metadata={"help": "Epochs of that fine-tuning; default: the finetune recipe's."}
    )
    min_agreement: float = field(
        default=0.99, metadata={"help": "int8 vs fp32 top-1 agreement gate of each export."}
    )
    max_accuracy_drop: float = field(
        default=0.005, metadata={"help": "Labelled validation accuracy drop gate of each int8 export."}
    )
    tie_margin: float = field(
        default=0.1,
        metadata={"help": "Flips of near-ties not counted by min_agreement (see `distilnlp export`)."},
    )
    parity_samples: int = field(
        default=1000, metadata={"help": "Validation texts of each export's parity check."}
    )
    latency_runs: int = field(
        default=50, metadata={"help": "Timed batch-1 calls per model in the benchmark."}
    )
    throughput_runs: int = field(
        default=3, metadata={"help": "Timed batch-32 calls per model in the benchmark."}
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "Intra-op threads of every benchmarked model; default: os.cpu_count()."},
    )
    sequence_length: int | None = field(
        default=None, metadata={"help": "Timed inputs are padded to this many tokens; default: max_length."}
    )

    def __post_init__(self):
        if not 0.0 < self.min_retention <= 1.5:
            raise ValueError(f"min_retention must be in (0, 1.5], got {self.min_retention}.")
        if self.quantization_aware_epochs <= 0 or self.quantization_aware_learning_rate <= 0:
            raise ValueError(
                "quantization_aware_epochs and quantization_aware_learning_rate must be > 0, got "
                f"{self.quantization_aware_epochs} and {self.quantization_aware_learning_rate}."
            )


SWEEP_TYPES = (SweepDistillArguments, DataArguments, DistillationTrainingArguments, SweepArguments)


def variant_config(
    config: tuple, output_dir: Path, depth: int, qat_from: Path | None, teacher: str | None
) -> tuple:
    """(DistillArguments, DataArguments, DistillationTrainingArguments) of one student: copies of the sweep's
    parsed `config` with the variant's settings. `qat_from`: the distilled fp32 student that the
    quantization-aware one starts from (None: the fp32 student itself)."""
    distill_args, data_args, args, sweep_args = config
    distill_changes = {"teacher": teacher} if teacher else {}
    training_changes = {"output_dir": str(output_dir), "quantization_aware": qat_from is not None}
    if qat_from is not None:
        distill_changes["student"] = str(qat_from)
        training_changes |= {
            "num_train_epochs": sweep_args.quantization_aware_epochs,
            "learning_rate": sweep_args.quantization_aware_learning_rate,
        }
    # `replace` re-runs __post_init__ on already converted values, so derivations there must be idempotent
    # (tests/test_sweep.py compares every field of each copy with a fresh parse of the old flag strings).
    return (
        distill_args.for_depth(depth, **distill_changes),
        data_args,
        dataclasses.replace(args, **training_changes),
    )


def _progress(message: str) -> None:
    print(f"[sweep] {message}", flush=True)


def _finetune_teacher(sweep_args: SweepArguments, data_args: DataArguments, out: Path) -> str:
    from .demo import stage_config
    from .stages import finetune

    teacher_dir = out / "teacher"
    model_args, _, ft_args = stage_config(
        sweep_args.finetune_recipe,
        (FinetuneArguments, DataArguments, StageTrainingArguments),
        output_dir=teacher_dir,
        num_train_epochs=sweep_args.teacher_epochs,
    )
    _progress(f"teacher: fine-tuning with {sweep_args.finetune_recipe} -> {teacher_dir} (reused if finished)")
    results = finetune(model_args, data_args, ft_args)  # the sweep's data, not the finetune recipe's
    _progress(f"teacher: test accuracy {results['test_accuracy']:.4f}")
    return str(teacher_dir)


def _distill_and_export(config: tuple, depth: int, qat: bool, teacher: str | None, out: Path, notes) -> Path:
    """Distill one student (reused when finished) and export it (reused unless the student was just trained);
    returns the export folder, or None when the export failed its parity gate (recorded in `notes`)."""
    from .deploy import export_with_task_data
    from .stages import distill

    suffix = "-qat" if qat else ""
    student_dir, onnx_dir = (
        out / f"layers-{depth}" / f"student{suffix}",
        out / f"layers-{depth}" / f"onnx{suffix}",
    )
    qat_from = out / f"layers-{depth}" / "student" if qat else None
    sweep_args = config[3]
    distill_args, data_args, args = variant_config(config, student_dir, depth, qat_from, teacher)
    kind = "quantization-aware " if qat else ""
    trained = not (student_dir / DISTILL_RESULTS_FILE).is_file()
    _progress(
        f"{depth} layer(s): {'distilling' if trained else 'reusing'} the {kind}student -> {student_dir}"
    )
    results = distill(distill_args, data_args, args)  # returns the finished run's results without training
    _progress(
        f"{depth} layer(s): {kind}student test accuracy {results['student_test_accuracy']:.4f} (PyTorch)"
    )
    if not trained and (onnx_dir / EXPORT_SUMMARY_FILE).is_file():
        _progress(f"{depth} layer(s): reusing the export {onnx_dir}")
        return onnx_dir
    _progress(f"{depth} layer(s): exporting the {kind}student to fp32 + int8 ONNX -> {onnx_dir}")
    export_args = ExportArguments(
        model_dir=str(student_dir),
        output_dir=str(onnx_dir),
        min_agreement=sweep_args.min_agreement,
        tie_margin=sweep_args.tie_margin,
        max_accuracy_drop=sweep_args.max_accuracy_drop,
        parity_samples=sweep_args.parity_samples,
    )
    try:
        result = export_with_task_data(export_args, data_args)
    except ParityError as error:  # reported and left out of the benchmark, never a silent bad model
        notes.append(f"{depth} layer(s) {kind}export rejected by its parity check: {error}")
        _progress(notes[-1])
        return None
    if result.int8_choice is not None:
        _progress(f"{depth} layer(s): int8 graph chosen by the export: {result.int8_choice.chosen.name}")
    return onnx_dir


def sweep(
    distill_args: SweepDistillArguments,
    data_args: DataArguments,
    args: DistillationTrainingArguments,
    sweep_args: SweepArguments,
) -> dict:
    """Run the sweep of the parsed `SWEEP_TYPES` (`parse_config(SWEEP_TYPES, argv)`); returns the sweep.json."""
    from .deploy import _texts_and_labels, checked_onnx_stage, load_tokenizer

    if detect_task(data_args) == TOKEN_TASK:  # it chooses by accuracy, which is not the measure of a tagger
        raise ValueError(
            "sweep does not handle token classification yet; run distill / export / benchmark per student depth "
            "(benchmark reports entity F1)."
        )
    config = (distill_args, data_args, args, sweep_args)
    out = Path(args.output_dir)
    depths = distill_args.student_layers
    _progress(
        f"depths {depths}, variants fp32 / int8 PTQ{' / int8 QAT' if sweep_args.with_quantization_aware else ''}"
    )
    # A fine-tuned teacher replaces the recipe's; otherwise the recipe's teacher(s) are used as they are.
    fine_tuned = _finetune_teacher(sweep_args, data_args, out) if sweep_args.finetune_recipe else None
    reference = fine_tuned or distill_args.teachers[args.feature_teacher]  # the benchmark's reference

    notes: list[str] = []
    exports: list[tuple[int, str, Path, str]] = []  # (depth, variant, folder, file)
    for depth in depths:
        onnx_dir = _distill_and_export(config, depth, False, fine_tuned, out, notes)
        if onnx_dir is not None:
            exports += [(depth, "fp32", onnx_dir, ONNX_FILE), (depth, "int8 PTQ", onnx_dir, QUANTIZED_FILE)]
        if sweep_args.with_quantization_aware:
            qat_dir = _distill_and_export(config, depth, True, fine_tuned, out, notes)
            if qat_dir is not None:
                exports.append((depth, "int8 QAT", qat_dir, QUANTIZED_FILE))

    bench_args = BenchmarkArguments(
        output_dir=str(out / "benchmark"),
        sequence_length=sweep_args.sequence_length or data_args.max_length,
        num_threads=sweep_args.num_threads,
        latency_runs=sweep_args.latency_runs,
        throughput_runs=sweep_args.throughput_runs,
    )
    _progress(
        f"benchmarking the teacher and {len(exports)} exported models in one run -> {bench_args.output_dir}"
    )
    stages = [torch_stage("teacher (PyTorch fp32)", reference)]
    stages += [
        checked_onnx_stage(f"{d}L {variant}", folder, file, bench_args)
        for d, variant, folder, file in exports
    ]
    texts, labels = _texts_and_labels(data_args, "test")
    report = run_benchmark(stages, texts, labels, load_tokenizer(reference, "teacher"), bench_args)
    result = summarize(report, exports, sweep_args.min_retention, notes)
    write_outputs(result, out)
    _progress(f"chosen: {result['chosen']['name']}: {result['chosen']['reason']}")
    _progress(f"wrote {out / SWEEP_JSON}, {out / SWEEP_MARKDOWN}, {out / SWEEP_PLOT}")
    return result


def summarize(report: dict, exports: list, min_retention: float, notes: list[str]) -> dict:
    """The benchmark's records as frontier points (the teacher first, not a candidate), front and choice."""
    records = report["stages"]
    teacher = records[0]
    points = [
        {
            "name": "teacher",
            "depth": None,
            "variant": "teacher (PyTorch fp32)",
            "candidate": False,
            "path": None,
        }
    ]
    points += [
        {
            "name": f"{d}L {variant}",
            "depth": d,
            "variant": variant,
            "candidate": True,
            "path": str(folder / file),
        }
        for d, variant, folder, file in exports
    ]
    for point, record in zip(points, records, strict=True):
        point |= {
            key: record[key] for key in ("accuracy", "f1", "latency_p50_ms", "latency_p95_ms", "size_mb")
        }
        point["throughput_samples_per_s"] = record["throughput_samples_per_s"]
        point["retention"] = record["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else 0.0
    for point, on in zip(points, pareto_front(points), strict=True):
        point["on_pareto_front"] = on
    chosen = choose_model(points, teacher["accuracy"], min_retention)
    return {
        "teacher_accuracy": teacher["accuracy"],
        "min_retention": min_retention,
        "chosen": chosen,
        "points": points,
        "notes": notes,
        "benchmark_settings": report["settings"],
    }


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / SWEEP_JSON).write_text(json.dumps(result, indent=2) + "\n")
    chosen = result["chosen"]
    settings = result["benchmark_settings"]
    loads = [settings[f"load_average_{when}"] for when in ("before", "after")]
    load = "/".join("n/a" if x is None else f"{x:.2f}" for x in loads)
    lines = [
        markdown_table(result["points"], chosen["name"]),
        f"Chosen: **{chosen['name']}**: {chosen['reason']}.",
        "",
        f"Test split, {settings['num_examples']} texts; latency at batch 1, padded to {settings['sequence_length']} "
        f"tokens, {settings['num_threads']} threads; load average {load} before/after (above the core count "
        "latencies are unreliable).",
        *[f"- note: {note}" for note in result["notes"]],
    ]
    (out / SWEEP_MARKDOWN).write_text("\n".join(lines) + "\n")
    plot_frontier(result["points"], out / SWEEP_PLOT, chosen["name"])
