"""Export and benchmark with the task's own texts: calibration from train, the int8 gate (agreement and labelled
accuracy) from validation, scores from test."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig

from ..benchmark.stages import BenchmarkArguments, onnx_stage, run_benchmark, torch_stage
from ..data import TOKEN_TASK, DataArguments, detect_task, label_names, load_task_data, load_token_data
from ..data.sources import BBC_NEWS
from ..data.tokenize import check_max_length
from ..onnx import ExportArguments, ExportResult, ExportTexts, export_model
from ..onnx.atomic import check_model_folder, check_target, sequence_limit
from ..runs.artifacts import (
    DISTILL_RESULTS_FILE,
    EXPORT_SUMMARY_FILE,
    FINETUNE_RESULTS_FILE,
    ONNX_FILE,
    OPTIMIZED_FILE,
    QUANTIZED_FILE,
)
from ..runs.model_files import saved_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class ExportTargetArguments:
    """What `distilnlp export` may do to an existing output folder."""

    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Export into a non-empty --output folder that is not a previous distilnlp export (files with "
            "the export's names are replaced). A previous export's files are always replaced, once the new export "
            "passed its checks; files no export wrote are kept."
        },
    )


def _texts_and_labels(
    data_args: DataArguments, split: str, limit: int | None = None, data=None
) -> tuple[list, list]:
    """(texts, label ids) of a split; for token-classification data (`tokens` / `tags` columns), (word
    lists, tag-id lists)."""
    dataset = (data if data is not None else load_task_data(data_args))[split]
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    if "tags" in dataset.column_names and "tokens" in dataset.column_names:
        return list(dataset["tokens"]), list(dataset["tags"])
    return list(dataset[data_args.text_column]), list(dataset[data_args.label_column])


def load_data(data_args: DataArguments):
    """The task's splits: `load_token_data` for token classification, else `load_task_data`."""
    return load_token_data(data_args) if detect_task(data_args) == TOKEN_TASK else load_task_data(data_args)


def data_label_names(data) -> list[str]:
    """Class names of the data (tag names of token-classification data)."""
    if "tags" in data["train"].column_names:
        return list(data["train"].features["tags"].feature.names)
    return label_names(data)


def _texts(data_args: DataArguments, split: str, limit: int | None, data) -> tuple[list, list]:
    """`_texts_and_labels` with token data's sentences as text (words joined by spaces: the export tokenizes
    text; a BERT-class pre-tokenizer splits it back into the same words, punctuation apart)."""
    texts, labels = _texts_and_labels(data_args, split, limit, data)
    if texts and isinstance(texts[0], list):
        return [" ".join(words) for words in texts], labels
    return texts, labels


def load_tokenizer(folder: str | Path, role: str):
    try:
        return saved_tokenizer(folder)
    except (OSError, ValueError, TypeError) as error:
        raise FileNotFoundError(
            f"The {role} folder {folder} has no usable tokenizer ({str(error).splitlines()[0][:100]}); save it "
            f"next to the model: tokenizer.save_pretrained({str(folder)!r})."
        ) from error


def recorded_data(model_dir: str | Path) -> dict | None:
    """The data settings a model was trained with, from its `distill_results.json` / `finetune_results.json`."""
    for name in (DISTILL_RESULTS_FILE, FINETUNE_RESULTS_FILE):
        try:
            data = json.loads((Path(model_dir) / name).read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            continue
        if data:
            return data
    return None


def task_data_for(model_dir: Path, data_args: DataArguments) -> DataArguments:
    """The default dataset replaced by the one the model was trained on, when its results file says."""
    recorded = recorded_data(model_dir)
    if recorded and data_args.dataset == BBC_NEWS and recorded.get("dataset") != BBC_NEWS:
        logger.warning(
            "Using the data %s was trained on (%s, from its results file); pass --dataset for other texts.",
            model_dir,
            recorded["dataset"],
        )
        return dataclasses.replace(data_args, **recorded)
    return data_args


def check_labels(config, names: list[str], data_args: DataArguments, static: bool) -> None:
    """The data must be the model's task: same number of classes, same names when the model knows them."""
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        return
    model_names = [config.id2label[i] for i in range(config.num_labels)]
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(model_names))
    if len(names) == config.num_labels and (generic or model_names == names):
        return
    message = f"The model predicts {model_names} but the data {data_args.dataset!r} has the labels {names}"
    if static:
        raise ValueError(
            f"{message}: static quantization calibrates on the task's own training texts; pass --dataset with "
            "the data the model was trained on."
        )
    logger.warning(
        "%s; the parity checks use these texts anyway (pass --dataset for the model's own).", message
    )


def export_with_task_data(
    export_args: ExportArguments, data_args: DataArguments, overwrite: bool = False
) -> ExportResult:
    """`export_model` with calibration texts drawn from the training split and the parity texts and labels from the
    validation split: the int8 graph is chosen on validation accuracy, so the test split stays unseen.

    Checked before any work: the model folder and its tokenizer, the output folder (see `ExportTargetArguments`),
    and that the data is the model's task (static calibration on another task's texts is an error).
    """
    model_dir = check_model_folder(export_args.model_dir)
    check_target(Path(export_args.output_dir), model_dir, overwrite)
    tokenizer = load_tokenizer(model_dir, "model")
    static = export_args.quantize == "static"
    data_args = task_data_for(model_dir, data_args)
    check_max_length(tokenizer, data_args.max_length)  # else long texts fail inside the parity checks
    data = load_data(data_args)
    check_labels(AutoConfig.from_pretrained(model_dir), data_label_names(data), data_args, static)
    calibration = None
    if static:
        calibration, _ = _texts(data_args, "train", export_args.calibration_samples, data)
    parity, labels = _texts(data_args, "validation", export_args.parity_samples, data)
    # Unlabelled rows (label -100, e.g. with --labeled_fraction) cannot score accuracy: gate on agreement only;
    # token classifiers are gated on per-word top-1 agreement (`onnx.parity.predicted_positions`).
    labels = labels if all(isinstance(label, int) and label >= 0 for label in labels) else None
    vocabulary = None
    if export_args.trim_vocabulary:  # every split: the trimmed model must tokenize all of the task's texts
        vocabulary = [text for split in data for text in _texts(data_args, split, None, data)[0]]
    texts = ExportTexts(parity, labels, calibration, vocabulary, data_args.max_length)
    return export_model(export_args, texts, overwrite=overwrite)


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
    """Teacher and student in PyTorch fp32, the student in ONNX fp32 / int8: one run, on the test split.

    Every model encodes the texts with the tokenizer saved with it (a folder without one: the teacher's, with a
    warning) and its predictions are matched to the labels by class name; an int8 stage is named after the
    quantization its `distilnlp_export.json` records. Checked first: both model folders, the teacher's tokenizer,
    every ONNX file (a truncated one is named, with the command that rewrites it), `sequence_length` (clamped
    to what the models accept), and that all models predict the same classes.
    """
    tokenizer = load_tokenizer(check_model_folder(models.teacher, "teacher"), "teacher")
    check_model_folder(models.student, "student")
    check_max_length(tokenizer, args.sequence_length, "sequence_length")
    stages = [
        torch_stage("teacher (PyTorch fp32)", models.teacher, tokenizer),
        torch_stage("student (PyTorch fp32)", models.student),
    ]
    if models.onnx_dir:
        onnx = Path(models.onnx_dir)
        stages.append(checked_onnx_stage("student (ONNX fp32)", onnx, ONNX_FILE, args))
        if (onnx / OPTIMIZED_FILE).is_file():  # written by `export --optimize`
            stages.append(checked_onnx_stage("student (ONNX fp32 optimized)", onnx, OPTIMIZED_FILE, args))
        if (onnx / QUANTIZED_FILE).is_file():
            stages.append(checked_onnx_stage(int8_stage_name(onnx, "dynamic"), onnx, QUANTIZED_FILE, args))
    if models.onnx_static_dir:
        static = Path(models.onnx_static_dir)
        name = int8_stage_name(static, "static")
        if name in {stage.name for stage in stages}:  # two exports of one mode: tell them apart
            name = f"{name[:-1]}, {static.name})"
        stages.append(checked_onnx_stage(name, static, QUANTIZED_FILE, args))
    student = stages[1]
    own = [(models.teacher, tokenizer), (models.student, student.tokenizer or tokenizer)]
    args = clamped_sequence_length(args, own)
    data = load_data(data_args)
    texts, labels = _texts_and_labels(data_args, "test", data=data)
    try:
        names = (
            data_label_names(data)
            if "tags" in data["train"].column_names
            else label_names(data, data_args.label_column)
        )
    except ValueError:  # no class names: stages are matched to each other by name, to the labels by index
        names = None
    return run_benchmark(stages, texts, labels, tokenizer, args, names)


def clamped_sequence_length(args: BenchmarkArguments, models: list[tuple]) -> BenchmarkArguments:
    """`args` with `sequence_length` at most what every (model folder, its tokenizer) accepts."""
    limits = [sequence_limit(AutoConfig.from_pretrained(folder), tok) for folder, tok in models]
    limit = min((x for x in limits if x is not None), default=None)
    if limit is None or args.sequence_length <= limit:
        return args
    logger.warning(
        "sequence_length=%d exceeds what the models accept (%d positions); using %d.",
        args.sequence_length,
        limit,
        limit,
    )
    return dataclasses.replace(args, sequence_length=limit)


def int8_stage_name(folder: Path, default: str) -> str:
    """The int8 stage's name, with the quantization mode its export recorded (`arguments.quantize` of
    distilnlp_export.json), or `default` for a folder without a readable record."""
    try:
        mode = json.loads((folder / EXPORT_SUMMARY_FILE).read_text())["arguments"]["quantize"]
    except (OSError, ValueError, KeyError, TypeError):
        mode = None
    return f"student (ONNX int8 {mode if isinstance(mode, str) else default})"


def checked_onnx_stage(name: str, folder: Path, file_name: str, args: BenchmarkArguments):
    """`onnx_stage`, with a one-line error naming a missing or unreadable ONNX file and how to rewrite it."""
    path = folder / file_name
    fix = f"re-export it: distilnlp export MODEL_DIR --output {folder}"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {fix}.")
    try:
        return onnx_stage(name, folder, file_name, num_threads=args.num_threads)
    except Exception as error:  # protobuf / onnxruntime raise their own types for a damaged graph
        raise ValueError(
            f"{path} is not a readable ONNX model ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            f"{fix}."
        ) from error
