"""Export a fine-tuned (student) model to ONNX, fuse and int8-quantize it with ONNX Runtime, check parity.

    export_model(ExportArguments("runs/student", "runs/student-onnx"), ExportTexts(parity_texts=texts))

(`distilnlp.onnx.export_model`, in `atomic.py`, checks the inputs and runs `write_export` here on a staging
folder) writes into `output_dir`:

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
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..int8.quantization_aware import fake_quantized_logits, is_quantization_aware
from ..runs.artifacts import (
    CORE_PACKAGES,
    ONNX_FILE,
    ONNX_PACKAGES,
    OPTIMIZED_FILE,
    ORT_CONFIG_FILE,
    QUANTIZED_FILE,
    package_versions,
)
from ..runs.artifacts import EXPORT_SUMMARY_FILE as SUMMARY_FILE
from .arguments import ExportArguments, ExportTexts
from .fallback import Int8Choice, quantize_and_choose
from .fusion import FusedGraph, fuse_graph, optimized_graph
from .parity import ParityError, ParityReport, _load_tokenizer, _parity_batches, check_parity
from .quantize import CalibrationTexts
from .tasks import _task, load_for_export
from .torch_export import OPSET, export_graph, graph_input_names
from .vocabulary import trim_for_export

logger = logging.get_logger(__name__)


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


@dataclass
class _Source:
    """The model being exported, loaded once for every step."""

    model_dir: Path  # the trimmed copy with `trim_vocabulary`
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase | None
    model: PreTrainedModel  # eager attention, evaluation mode
    input_names: list[str]


def write_export(args: ExportArguments, texts: ExportTexts, output_dir: Path) -> ExportResult:
    """Export `args.model_dir` into `output_dir` (the writer; `distilnlp.onnx.export_model` calls it on a staging
    folder): the fp32 graph, the optimized one with `args.optimize`, the int8 graph chosen by the fallback chain,
    then `distilnlp_export.json`.

    Raises:
        ParityError: a graph does not reproduce its reference within the thresholds.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in (OPTIMIZED_FILE, QUANTIZED_FILE, ORT_CONFIG_FILE, SUMMARY_FILE):
        (output_dir / stale).unlink(missing_ok=True)
    trimmed = trim_for_export(args.model_dir, texts.vocabulary_texts) if args.trim_vocabulary else None
    source = _load(Path(trimmed.model_dir if trimmed is not None else args.model_dir))
    parity_kwargs = {
        "tokenizer": source.tokenizer,
        "texts": texts.parity_texts,
        "num_samples": args.parity_samples,
        "max_length": texts.max_length,
        "max_abs_diff": args.max_abs_diff,
        "min_agreement": args.min_agreement,
        "tie_margin": args.tie_margin,
    }
    onnx_path, optimized_path, parity = _export_fp32(args, source, output_dir, parity_kwargs)
    int8 = {}
    if args.quantize != "none":
        int8 = _export_int8(args, texts, source, onnx_path, output_dir, parity_kwargs)
        parity["int8"] = int8["parity"]
    summary = {
        "arguments": asdict(args) | {"max_length": texts.max_length},
        "task": _task(source.config),
        "exporter": {
            "name": "torch.onnx.export (TorchScript)",
            "opset": OPSET,
            "input_names": source.input_names,
        },
        "fusion": int8.get("fusion"),
        "calibration": int8.get("calibration"),
        "parity": {k: asdict(v) for k, v in parity.items()},
        "int8_choice": int8["choice"].summary() if int8 else None,
        "vocabulary": trimmed.finish(output_dir) if trimmed is not None else None,
        "versions": package_versions(*CORE_PACKAGES, *ONNX_PACKAGES),
    }
    quantized_path = int8["choice"].path if int8 else None
    summary_path = _write_summary(summary, output_dir, onnx_path, optimized_path, quantized_path)
    return ExportResult(
        output_dir, onnx_path, optimized_path, quantized_path, summary_path, parity, int8.get("choice")
    )


def _load(model_dir: Path) -> _Source:
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = _load_tokenizer(model_dir)
    model = load_for_export(model_dir, config)
    return _Source(model_dir, config, tokenizer, model, graph_input_names(model, tokenizer))


def _export_fp32(
    args: ExportArguments, source: _Source, output_dir: Path, parity_kwargs: dict
) -> tuple[Path, Path | None, dict[str, ParityReport]]:
    """(model.onnx, model_optimized.onnx or None, their parity reports): the graphs, config and tokenizer."""
    logger.info(
        f"Exporting {source.model_dir} to ONNX (torch.onnx.export, opset {OPSET}, inputs {source.input_names})"
    )
    onnx_path = export_graph(source.model, output_dir / ONNX_FILE, source.input_names)
    if source.tokenizer is not None:
        source.tokenizer.save_pretrained(output_dir)
    source.config.save_pretrained(output_dir)
    parity = {"fp32": check_parity(source.model, onnx_path, **parity_kwargs)}
    logger.info(f"fp32 ONNX parity: max |diff| = {parity['fp32'].max_abs_diff:.3g}")
    optimized_path = None
    if args.optimize is not None:
        optimized_path = optimized_graph(onnx_path, source.config, output_dir / OPTIMIZED_FILE, args.optimize)
        parity["optimized"] = check_parity(source.model, optimized_path, **parity_kwargs)
        logger.info(
            f"Optimized (level {args.optimize}) parity: max |diff| = {parity['optimized'].max_abs_diff:.3g}"
        )
    return onnx_path, optimized_path, parity


def _export_int8(
    args: ExportArguments,
    texts: ExportTexts,
    source: _Source,
    onnx_path: Path,
    output_dir: Path,
    parity_kwargs,
) -> dict:
    """The int8 graph chosen by the fallback chain, moved to model_quantized.onnx: {"choice", "parity", "fusion",
    "calibration"} (the last two as recorded in the summary)."""
    config = source.config
    with tempfile.TemporaryDirectory(dir=output_dir) as scratch:  # candidates: the same disk for the move
        fused = fusion = None
        if (
            args.fuse and args.quantize == "dynamic"
        ):  # static ranges are named after the unfused graph's tensors
            fused, fusion = _checked_fusion(source.model, onnx_path, config, Path(scratch), parity_kwargs)
        calibration = _calibration(args, config, source.tokenizer, texts, source.input_names)
        batches = _parity_batches(
            config, source.tokenizer, texts.parity_texts, args.parity_samples, texts.max_length
        )
        choice = quantize_and_choose(
            args,
            onnx_path=onnx_path,
            fused=fused,
            calibration=calibration,
            work_dir=Path(scratch),
            batches=batches,
            labels=texts.parity_labels,
            fake_quantized_logits=_qat_reference(args, config, source.model_dir, batches, source.input_names),
        )
        choice.path = Path(shutil.move(choice.path, output_dir / QUANTIZED_FILE))
    # A quantization-aware student's int8 graph was gated against its fake-quantized self in the chain; its
    # agreement with the fp32 graph (what it was not trained to compute) is reported, not gated.
    int8_kwargs = parity_kwargs | ({"min_agreement": 0.0} if is_quantization_aware(config) else {})
    parity = check_parity(source.model, onnx_path, quantized_path=choice.path, **int8_kwargs)
    logger.info(
        f"int8 ({args.quantize}) top-1 agreement with fp32: {parity.agreement:.2%}; "
        f"max |diff| = {parity.max_abs_diff:.3g}"
    )
    recorded = calibration and {
        "method": args.calibration_method,
        "num_samples": calibration.num_samples,
        "max_length": texts.max_length,
    }
    return {"choice": choice, "parity": parity, "fusion": fusion, "calibration": recorded}


def _write_summary(summary: dict, output_dir: Path, *graphs: Path | None) -> Path:
    """`distilnlp_export.json`, with the graphs' file names and sizes (fp32, optimized, int8)."""
    files = dict(zip(("fp32", "optimized", "int8"), graphs, strict=True))
    summary["files"] = {k: p.name for k, p in files.items() if p is not None}
    summary["sizes_bytes"] = {k: p.stat().st_size for k, p in files.items() if p is not None}
    path = output_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


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


def _calibration(args, config, tokenizer, texts: ExportTexts, input_names) -> CalibrationTexts | None:
    if args.quantize != "static":
        return None
    calibration = CalibrationTexts(
        config, tokenizer, texts.calibration_texts, args.calibration_samples, texts.max_length, input_names
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
