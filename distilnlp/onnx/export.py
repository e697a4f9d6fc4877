"""Export a fine-tuned (student) model to ONNX, fuse and int8-quantize it with ONNX Runtime, check parity.

    export_model("runs/student", "runs/student-onnx", quantize="dynamic")

writes into `output_dir`:

- `model.onnx`: the fp32 graph written by `torch.onnx.export` (`torch_export.py`);
- `model_optimized.onnx`: ONNX Runtime's optimized fp32 graph, only when `optimize` is set;
- `model_quantized.onnx`: the int8 graph chosen by the fallback chain (`fallback.py`): first the quantized fused
  graph (ORT's transformer fusions, `fusion.py`), then the unfused one;
- `config.json` and the tokenizer files, so `distilnlp.onnx.OnnxClassifier.from_pretrained(output_dir)` (or
  Optimum's `ORTModelFor*`, where installed) and `AutoTokenizer.from_pretrained(output_dir)` load it;
- `distilnlp_export.json`: arguments, inputs, fused-operator counts, quantization settings, files, sizes, parity
  figures (the int8 entry's `max_abs_diff` is int8 vs fp32 ONNX), library versions; `atomic.export_model` adds
  `written_files`, every file the export put in the folder (what a re-export may replace).

Every export is checked: fp32 ONNX logits against the PyTorch model (max absolute difference), the fused graph
likewise, and int8 against its reference (top-1 agreement, and labelled accuracy when labels are given); a failed
check raises `ParityError`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig
from transformers.utils import logging

from ..artifacts import (
    CORE_PACKAGES,
    ONNX_FILE,
    ONNX_PACKAGES,
    OPTIMIZED_FILE,
    ORT_CONFIG_FILE,
    QUANTIZED_FILE,
    package_versions,
)
from ..artifacts import EXPORT_SUMMARY_FILE as SUMMARY_FILE
from ..quantization_aware import fake_quantized_logits, is_quantization_aware
from ..vocabulary import trim_for_export
from .fallback import Int8Choice, quantize_and_choose
from .fusion import FusedGraph, fuse_graph, optimized_graph
from .parity import ParityError, ParityReport, _load_tokenizer, _parity_batches, check_parity
from .quantize import (
    CALIBRATION_METHODS,
    OPTIMIZATION_LEVELS,
    PRESETS,
    QUANTIZATION_MODES,
    CalibrationTexts,
    default_preset,
)
from .tasks import _task, load_for_export
from .torch_export import OPSET, export_graph, graph_input_names

logger = logging.get_logger(__name__)


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}.")


@dataclass
class ExportArguments:
    """Arguments of `distilnlp export` (parse with `transformers.HfArgumentParser`)."""

    model_dir: str = field(metadata={"help": "Folder of the fine-tuned PyTorch model (and its tokenizer)."})
    output_dir: str = field(
        metadata={
            "help": "Folder to write the ONNX models, tokenizer and reports to.",
            "aliases": ["--output"],
        }
    )
    optimize: int | None = field(
        default=None,
        metadata={
            "help": "Also write an optimized fp32 graph, model_optimized.onnx, which `distilnlp benchmark` times: 0 "
            "(as exported), 1 (ONNX Runtime's basic graph optimizations), 2 (ORT's transformer fusions: Attention, "
            "SkipLayerNormalization, ...). Unset: none."
        },
    )
    quantize: str = field(
        default="dynamic",
        metadata={"help": f"int8 quantization: {', '.join(QUANTIZATION_MODES)}."},
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": f"Quantization preset named after the target CPU: {', '.join(PRESETS)}. "
            "Default: chosen from the CPU this runs on."
        },
    )
    per_channel: bool = field(
        default=True,
        metadata={
            # Measured on the sentence students (seeds 0-1, 1 and 2 layers): 1.1x to 3.6x lower logit error than
            # per-tensor weights, at the same graph size and ops.
            "help": "Quantize weights with one scale per output channel (false: one per matrix, the first attempt "
            "of the fallback chain is then per-tensor)."
        },
    )
    fuse: bool = field(
        default=True,
        metadata={
            "help": "Try the int8 graph of ONNX Runtime's fused transformer ops (QAttention, EmbedLayerNormalization, "
            "SkipLayerNormalization: the fastest on CPU) before the unfused one; false: standard ONNX ops plus "
            "MatMulInteger only, for runtimes without ORT's contrib ops. Dynamic quantization only."
        },
    )
    calibration_samples: int = field(
        default=128, metadata={"help": "Number of calibration texts used by static quantization."}
    )
    calibration_method: str = field(
        default="minmax",
        metadata={"help": f"Static calibration method: {', '.join(CALIBRATION_METHODS)}."},
    )
    max_abs_diff: float = field(
        default=1e-4,
        metadata={"help": "Largest allowed |fp32 ONNX logits - PyTorch logits| in the parity check."},
    )
    min_agreement: float = field(
        default=0.99,
        metadata={"help": "Smallest allowed top-1 agreement of the int8 model with the fp32 ONNX model."},
    )
    tie_margin: float = field(
        default=0.1,
        metadata={
            "help": "A flipped int8 prediction counts against min_agreement only when the fp32 graph preferred its "
            "own class by more than this much probability (0.1 = 10 points): int8 rounding flips near-ties, "
            "which were coin flips to begin with. 0: every flip counts. The raw agreement is reported as well."
        },
    )
    max_accuracy_drop: float = field(
        default=0.005,
        metadata={
            "help": "Largest allowed drop of labelled validation accuracy from the fp32 graph to the int8 graph "
            "(absolute: 0.005 = half a point). Checked only when the export has labelled texts."
        },
    )
    fallback: bool = field(
        default=True,
        metadata={
            "help": "When the int8 graph misses the gate (min_agreement, max_accuracy_drop), try per-channel "
            "weights, then keep the most sensitive nodes (found by a per-node sensitivity pass) in fp32."
        },
    )
    max_fp32_nodes: int = field(
        default=8,
        metadata={"help": "Most weight nodes the fallback may keep in fp32 before giving up."},
    )
    trim_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "Before exporting, keep only the word pieces the task's texts (all splits) use, in the tokenizer "
            "and the embedding matrix (WordPiece tokenizers); checked to tokenize every task text to the same ids."
        },
    )
    parity_samples: int = field(
        default=1000,
        # Enough that the 0.99 gate is not failed by chance: out of 256, three flipped near-ties (of a student
        # whose accuracy does not move) already fail it; out of 1000 it takes eleven.
        metadata={"help": "Number of inputs (texts or synthetic sequences) for the parity checks."},
    )

    def __post_init__(self):
        _check_choice("optimize", self.optimize, (None, *OPTIMIZATION_LEVELS))
        _check_choice("quantize", self.quantize, QUANTIZATION_MODES)
        if self.preset is None:
            self.preset = default_preset()
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1; got {self.calibration_samples}.")
        if not 0 < self.max_abs_diff < float("inf"):
            raise ValueError(f"max_abs_diff must be a finite number > 0; got {self.max_abs_diff}.")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1]; got {self.min_agreement}.")
        if not 0.0 <= self.tie_margin < 1.0:
            raise ValueError(f"tie_margin must be in [0, 1); got {self.tie_margin}.")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(f"max_accuracy_drop must be in [0, 1]; got {self.max_accuracy_drop}.")
        if self.max_fp32_nodes < 0:
            raise ValueError(f"max_fp32_nodes must be >= 0; got {self.max_fp32_nodes}.")
        if self.parity_samples < 1:
            raise ValueError(f"parity_samples must be >= 1; got {self.parity_samples}.")


@dataclass
class ExportResult:
    """Paths written by `export_model` and the parity figures of each graph."""

    output_dir: Path
    onnx_path: Path
    optimized_path: Path | None
    quantized_path: Path | None
    summary_path: Path
    parity: dict[str, ParityReport]
    int8_choice: Int8Choice | None = None


def export_model(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    optimize: int | None = None,
    quantize: str = "dynamic",
    preset: str | None = None,
    per_channel: bool = True,
    fuse: bool = True,
    calibration_texts: Sequence[str] | None = None,
    calibration_samples: int = 128,
    calibration_method: str = "minmax",
    parity_texts: Sequence[str] | None = None,
    parity_labels: Sequence[int] | None = None,
    parity_samples: int = 1000,
    max_abs_diff: float = 1e-4,
    min_agreement: float = 0.99,
    tie_margin: float = 0.1,
    max_accuracy_drop: float = 0.005,
    fallback: bool = True,
    max_fp32_nodes: int = 8,
    trim_vocabulary: bool = False,
    vocabulary_texts: Sequence[str] | None = None,
    max_length: int = 128,
) -> ExportResult:
    """Export `model_dir` to ONNX in `output_dir`, optionally optimize and int8-quantize it, and check parity.

    Arguments mirror `ExportArguments`; `calibration_texts` feed static quantization (padded to `max_length`),
    `parity_texts` the parity checks (synthetic token ids when None) and, with `parity_labels` (one label id per
    text), the accuracy gate. An int8 graph that misses the gate sends the export down the fallback chain of
    `onnx/fallback.py`; the choice is recorded under `int8_choice`. With `trim_vocabulary`, the model exported is a
    copy whose vocabulary keeps only what `vocabulary_texts` use (`distilnlp.vocabulary`), recorded under
    `vocabulary`.

    Raises:
        ParityError: a graph does not reproduce its reference within the thresholds.
    """
    args = ExportArguments(  # validated exactly as the command line is
        model_dir=str(model_dir),
        output_dir=str(output_dir),
        optimize=optimize,
        quantize=quantize,
        preset=preset,
        per_channel=per_channel,
        fuse=fuse,
        calibration_samples=calibration_samples,
        calibration_method=calibration_method,
        max_abs_diff=max_abs_diff,
        min_agreement=min_agreement,
        tie_margin=tie_margin,
        max_accuracy_drop=max_accuracy_drop,
        fallback=fallback,
        max_fp32_nodes=max_fp32_nodes,
        trim_vocabulary=trim_vocabulary,
        parity_samples=parity_samples,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in (OPTIMIZED_FILE, QUANTIZED_FILE, ORT_CONFIG_FILE, SUMMARY_FILE):
        (output_dir / stale).unlink(missing_ok=True)

    trimmed = trim_for_export(model_dir, vocabulary_texts) if trim_vocabulary else None
    if trimmed is not None:
        model_dir = trimmed.model_dir  # export the trimmed copy (a scratch folder, removed below)
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = _load_tokenizer(model_dir)
    torch_model = load_for_export(model_dir, config)
    input_names = graph_input_names(torch_model, tokenizer)
    parity_kwargs = {
        "tokenizer": tokenizer,
        "texts": parity_texts,
        "num_samples": parity_samples,
        "max_length": max_length,
        "max_abs_diff": max_abs_diff,
        "min_agreement": min_agreement,
        "tie_margin": tie_margin,
    }

    logger.info(f"Exporting {model_dir} to ONNX (torch.onnx.export, opset {OPSET}, inputs {input_names})")
    onnx_path = export_graph(torch_model, output_dir / ONNX_FILE, input_names)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    config.save_pretrained(output_dir)
    parity = {"fp32": check_parity(torch_model, onnx_path, **parity_kwargs)}
    logger.info(f"fp32 ONNX parity: max |diff| = {parity['fp32'].max_abs_diff:.3g}")

    optimized_path = None
    if optimize is not None:
        optimized_path = optimized_graph(onnx_path, config, output_dir / OPTIMIZED_FILE, optimize)
        parity["optimized"] = check_parity(torch_model, optimized_path, **parity_kwargs)
        logger.info(
            f"Optimized (level {optimize}) parity: max |diff| = {parity['optimized'].max_abs_diff:.3g}"
        )

    quantized_path = int8_choice = calibration = fusion = None
    if quantize != "none":
        with tempfile.TemporaryDirectory(dir=output_dir) as scratch:  # candidates: the same disk for the move
            fused, fusion = None, None
            if fuse and quantize == "dynamic":  # static ranges are named after the unfused graph's tensors
                fused, fusion = _checked_fusion(torch_model, onnx_path, config, Path(scratch), parity_kwargs)
            calibration = _calibration(args, config, tokenizer, calibration_texts, max_length, input_names)
            batches = _parity_batches(config, tokenizer, parity_texts, parity_samples, max_length)
            int8_choice = quantize_and_choose(
                args,
                onnx_path=onnx_path,
                fused=fused,
                calibration=calibration,
                work_dir=Path(scratch),
                batches=batches,
                labels=parity_labels,
                fake_quantized_logits=_qat_reference(args, config, model_dir, batches, input_names),
            )
            quantized_path = Path(shutil.move(int8_choice.path, output_dir / QUANTIZED_FILE))
            int8_choice.path = quantized_path
        # A quantization-aware student's int8 graph was gated against its fake-quantized self in the chain; its
        # agreement with the fp32 graph (what it was not trained to compute) is reported, not gated.
        qat = is_quantization_aware(config)
        int8_kwargs = parity_kwargs | ({"min_agreement": 0.0} if qat else {})
        parity["int8"] = check_parity(torch_model, onnx_path, quantized_path=quantized_path, **int8_kwargs)
        logger.info(
            f"int8 ({quantize}) top-1 agreement with fp32: {parity['int8'].agreement:.2%}; "
            f"max |diff| = {parity['int8'].max_abs_diff:.3g}"
        )

    files = {"fp32": onnx_path, "optimized": optimized_path, "int8": quantized_path}
    summary = {
        "arguments": asdict(args) | {"max_length": max_length},
        "task": _task(config),
        "exporter": {"name": "torch.onnx.export (TorchScript)", "opset": OPSET, "input_names": input_names},
        "fusion": fusion,
        "calibration": calibration
        and {
            "method": calibration_method,
            "num_samples": calibration.num_samples,
            "max_length": max_length,
        },
        "files": {k: p.name for k, p in files.items() if p is not None},
        "sizes_bytes": {k: p.stat().st_size for k, p in files.items() if p is not None},
        "parity": {k: asdict(v) for k, v in parity.items()},
        "int8_choice": int8_choice.summary() if int8_choice is not None else None,
        "vocabulary": trimmed.finish(output_dir) if trimmed is not None else None,
        "versions": package_versions(*CORE_PACKAGES, *ONNX_PACKAGES),
    }
    summary_path = output_dir / SUMMARY_FILE
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return ExportResult(
        output_dir, onnx_path, optimized_path, quantized_path, summary_path, parity, int8_choice
    )


def _checked_fusion(
    torch_model, onnx_path: Path, config, work_dir: Path, parity_kwargs: dict
) -> tuple[FusedGraph | None, dict]:
    """The fused fp32 graph when ORT fused every layer's attention and it still reproduces the PyTorch model, and
    what happened either way (recorded as the summary's `fusion`)."""
    # A quantization-aware student trained with its embeddings' LayerNorm in fp32: keep it out of the fusion.
    embed = not is_quantization_aware(config)
    fused = fuse_graph(onnx_path, config, work_dir / "fused" / ONNX_FILE, embed_layer_norm=embed)
    if fused is None:
        return None, {"used": False, "reason": "ONNX Runtime has no fusions for this architecture or failed"}
    record = {"ops": fused.ops, "layers": fused.num_layers, "complete": fused.complete}
    if not fused.complete:
        return None, record | {"used": False, "reason": "attention did not fuse in every layer"}
    try:
        report = check_parity(torch_model, fused.path, **parity_kwargs)
    except ParityError as error:
        logger.warning(f"The fused graph does not reproduce the model ({error}); using the unfused graph.")
        return None, record | {"used": False, "reason": str(error)}
    logger.info(f"Fused graph: {fused.describe()}; max |diff| = {report.max_abs_diff:.3g}")
    return fused, record | {"used": True, "max_abs_diff": report.max_abs_diff}


def _calibration(args, config, tokenizer, texts, max_length: int, input_names) -> CalibrationTexts | None:
    if args.quantize != "static":
        return None
    calibration = CalibrationTexts(
        config, tokenizer, texts, args.calibration_samples, max_length, input_names
    )
    logger.info(f"Calibrating ({args.calibration_method}) on {calibration.num_samples} examples")
    return calibration


def _qat_reference(args, config, model_dir, batches, input_names):
    """A quantization-aware student's fake-quantized logits on the parity batches (the int8 graph must compute
    what the student was trained and evaluated to compute); None for other models."""
    if not is_quantization_aware(config):
        return None
    if config.distilnlp_quantization_aware != args.preset:
        logger.warning(
            f"The student trained on the {config.distilnlp_quantization_aware!r} rounding grid but is quantized "
            f"with preset {args.preset!r}: pass --preset {config.distilnlp_quantization_aware} to match."
        )
    return fake_quantized_logits(load_for_export(model_dir, config), batches, input_names)
