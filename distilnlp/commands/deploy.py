"""Export and benchmark with the task's own texts: calibration from train, the int8 gate (agreement and labelled
accuracy) from validation, scores from test."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoTokenizer

from ..artifacts import ONNX_FILE, QUANTIZED_FILE
from ..benchmark import BenchmarkArguments, onnx_stage, run_benchmark, torch_stage
from ..data import DataArguments, load_task_data
from ..onnx import ExportArguments, ExportResult, export_model


def _texts_and_labels(data_args: DataArguments, split: str, limit: int | None = None) -> tuple[list, list]:
    dataset = load_task_data(data_args)[split]
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return list(dataset[data_args.text_column]), list(dataset[data_args.label_column])


def export_with_task_data(export_args: ExportArguments, data_args: DataArguments) -> ExportResult:
    """`export_model` with calibration texts drawn from the training split and the parity texts and labels from the
    validation split: the int8 graph is chosen on validation accuracy, so the test split stays unseen."""
    calibration = None
    if export_args.quantize == "static":
        calibration, _ = _texts_and_labels(data_args, "train", export_args.calibration_samples)
    parity, labels = _texts_and_labels(data_args, "validation", export_args.parity_samples)
    # Unlabelled rows (label -100, e.g. with --labeled_fraction) cannot score accuracy: gate on agreement only.
    labels = labels if all(label >= 0 for label in labels) else None
    vocabulary = None
    if export_args.trim_vocabulary:  # every split: the trimmed model must tokenize all of the task's texts
        vocabulary = [t for split in load_task_data(data_args).values() for t in split[data_args.text_column]]
    return export_model(
        **asdict(export_args),
        calibration_texts=calibration,
        parity_texts=parity,
        parity_labels=labels,
        vocabulary_texts=vocabulary,
        max_length=data_args.max_length,
    )


@dataclass
class BenchmarkModels:
    """Which models `distilnlp benchmark` compares (the first, the teacher, is the reference)."""

    teacher: str = field(default=None, metadata={"help": "Folder of the PyTorch teacher."})
    student: str = field(default=None, metadata={"help": "Folder of the PyTorch student."})
    onnx_dir: str | None = field(
        default=None, metadata={"help": "Folder of the student's ONNX export (fp32 + dynamic int8)."}
    )
    onnx_static_dir: str | None = field(
        default=None, metadata={"help": "Folder of a static-int8 export of the student, if any."}
    )

    def __post_init__(self):
        for name in ("teacher", "student"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required: the folder of the PyTorch {name}.")
        for name in ("teacher", "student", "onnx_dir", "onnx_static_dir"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise FileNotFoundError(f"--{name} {folder} is not a folder.")


def benchmark_models(models: BenchmarkModels, data_args: DataArguments, args: BenchmarkArguments) -> dict:
    """Teacher and student in PyTorch fp32, the student in ONNX fp32 / int8: one run, on the test split."""
    stages = [
        torch_stage("teacher (PyTorch fp32)", models.teacher),
        torch_stage("student (PyTorch fp32)", models.student),
    ]
    if models.onnx_dir:
        onnx = Path(models.onnx_dir)
        stages.append(onnx_stage("student (ONNX fp32)", onnx, ONNX_FILE, num_threads=args.num_threads))
        if (onnx / QUANTIZED_FILE).is_file():
            stages.append(
                onnx_stage("student (ONNX int8 dynamic)", onnx, QUANTIZED_FILE, num_threads=args.num_threads)
            )
    if models.onnx_static_dir:
        stages.append(
            onnx_stage(
                "student (ONNX int8 static)",
                models.onnx_static_dir,
                QUANTIZED_FILE,
                num_threads=args.num_threads,
            )
        )
    texts, labels = _texts_and_labels(data_args, "test")
    tokenizer = AutoTokenizer.from_pretrained(models.teacher)
    return run_benchmark(stages, texts, labels, tokenizer, args)
