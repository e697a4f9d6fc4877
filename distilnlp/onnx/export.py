"""Export a fine-tuned (student) model to ONNX with Optimum, optimize and int8-quantize it, check parity.

    export_model("runs/student", "runs/student-onnx", quantize="dynamic")

writes into `output_dir`:

- `model.onnx`: the fp32 graph exported by `ORTModelFor*.from_pretrained(..., export=True)`;
- `model_optimized.onnx`: the `ORTOptimizer` variant, only when `optimize` is set;
- `model_quantized.onnx`: the int8 graph made by `ORTQuantizer` from `model.onnx` (see `export_model` for why the
  unfused graph);
- `config.json` and the tokenizer files, so `ORTModelFor*.from_pretrained(output_dir, file_name=...)` and
  `AutoTokenizer.from_pretrained(output_dir)` load it, e.g. into `transformers.pipeline`;
- `ort_config.json` (Optimum's record of the optimization + quantization configs) and `distilnlp_export.json`
  (arguments, files, sizes, parity figures, library versions).

Every export is checked: fp32 ONNX logits against the PyTorch model (max absolute difference) and int8 against
fp32 ONNX (top-1 agreement, and labelled accuracy when labels are given); an int8 graph that misses the gate is
replaced by the first that passes in a fallback chain (`fallback.py`), and a failed check raises `ParityError`.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
)
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
from .parity import ParityReport, _load_tokenizer, _parity_batches, _session, check_parity
from .quantize import (
    CALIBRATION_METHODS,
    OPTIMIZATION_LEVELS,
    PRESETS,
    QUANTIZATION_MODES,
    _calibration_config,
    _calibration_dataset,
    _optimization_config,
    _quantization_config,
    default_preset,
)
from .tasks import _task, _torch_model_class, ort_model_class, require_onnx

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
            "help": "ONNX Runtime graph optimization level for ORTOptimizer: 0 (none), 1 (basic), 2 (extended + "
            "transformer fusions). Written as an extra model_optimized.onnx. Unset: no optimized variant."
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
            "help": "Try the int8 graph of ONNX Runtime's fused transformer ops (QAttention, SkipLayerNormalization: "
            "the fastest on CPU) before the unfused one; false: standard ONNX ops plus MatMulInteger only, for "
            "runtimes without ORT's contrib ops. Dynamic quantization only."
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

    The int8 graph is quantized from the exported (unfused) `model.onnx`, not from the optimized one: ORT's
    quantizer cannot type the outputs of fused contrib ops (`Attention`, `SkipLayerNormalization`) and fails with
    "Unable to find data type for weight_name". (Symbolic shape inference on the fused graph gets past that, but
    its int8 graph, with QAttention, ran no faster on CPU than the int8 unfused graph.) Arguments mirror
    `ExportArguments`; `calibration_texts` feed static quantization (padded to `max_length`), `parity_texts` the
    parity checks (synthetic token ids when None) and, with `parity_labels` (one label id per text), the
    accuracy gate. An int8 graph that misses the gate sends the export down the fallback chain of
    `onnx/fallback.py` (per-channel, then sensitive nodes in fp32); the choice is recorded under `int8_choice`.
    With `trim_vocabulary`, the model exported is a copy whose vocabulary keeps only what `vocabulary_texts` use
    (`distilnlp.vocabulary`), recorded under `vocabulary`.

    Raises:
        ParityError: a graph does not reproduce its reference within the thresholds.
    """
    require_onnx()
    from optimum.onnxruntime import ORTConfig, ORTOptimizer, ORTQuantizer

    # Validate exactly as the command line does.
    args = ExportArguments(
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
    ort_class = ort_model_class(config)
    tokenizer = _load_tokenizer(model_dir)
    torch_model = _torch_model_class(config).from_pretrained(model_dir).eval()
    parity_kwargs = {
        "tokenizer": tokenizer,
        "texts": parity_texts,
        "num_samples": parity_samples,
        "max_length": max_length,
        "max_abs_diff": max_abs_diff,
        "min_agreement": min_agreement,
        "tie_margin": tie_margin,
    }

    logger.info(f"Exporting {model_dir} to ONNX with {ort_class.__name__}")
    with warnings.catch_warnings():
        # Tracing transformers' attention-mask helpers warns about constants; the parity check below is the
        # real test that the trace generalizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        ort_model = ort_class.from_pretrained(model_dir, export=True)
    ort_model.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    onnx_path = output_dir / ONNX_FILE
    parity = {"fp32": check_parity(torch_model, onnx_path, **parity_kwargs)}
    logger.info(f"fp32 ONNX parity: max |diff| = {parity['fp32'].max_abs_diff:.3g}")

    optimization_config = optimized_path = None
    if optimize is not None:
        optimization_config = _optimization_config(optimize)
        ORTOptimizer.from_pretrained(ort_model).optimize(optimization_config, save_dir=output_dir)
        optimized_path = output_dir / OPTIMIZED_FILE
        parity["optimized"] = check_parity(torch_model, optimized_path, **parity_kwargs)
        logger.info(f"Optimized (O{optimize}) parity: max |diff| = {parity['optimized'].max_abs_diff:.3g}")

    quantization_config = quantized_path = int8_choice = None
    calibration: dict[str, Any] | None = None
    if quantize != "none":
        is_static = quantize == "static"
        quantization_config = _quantization_config(args.preset, is_static, per_channel)
        quantizer = ORTQuantizer.from_pretrained(output_dir, file_name=ONNX_FILE)
        ranges = None
        if is_static:
            input_names = [i.name for i in _session(onnx_path).get_inputs()]
            dataset = _calibration_dataset(
                config, tokenizer, calibration_texts, calibration_samples, max_length, input_names
            )
            calibration = {
                "method": calibration_method,
                "num_samples": len(dataset),
                "max_length": max_length,
            }
            logger.info(f"Calibrating ({calibration_method}) on {len(dataset)} examples")
            with tempfile.TemporaryDirectory() as tmp:  # the augmented graph is scratch: keep it out of cwd
                ranges = quantizer.fit(
                    dataset=dataset,
                    calibration_config=_calibration_config(calibration_method, dataset),
                    onnx_augmented_model_name=Path(tmp) / "augmented_model.onnx",
                    operators_to_quantize=quantization_config.operators_to_quantize,
                )
        qat = is_quantization_aware(config)
        if qat and config.distilnlp_quantization_aware != args.preset:
            logger.warning(
                f"The student trained on the {config.distilnlp_quantization_aware!r} rounding grid but is quantized "
                f"with preset {args.preset!r}: pass --preset {config.distilnlp_quantization_aware} to match."
            )
        batches = _parity_batches(config, tokenizer, parity_texts, parity_samples, max_length)
        reference = None
        if qat:  # the int8 graph must compute what the student was trained (and evaluated) to compute
            input_names = [i.name for i in _session(onnx_path).get_inputs()]
            student = _torch_model_class(config).from_pretrained(model_dir)
            reference = fake_quantized_logits(student, batches, input_names)
        int8_choice = quantize_and_choose(
            quantizer,
            args,
            is_static=is_static,
            ranges=ranges,
            onnx_path=onnx_path,
            output_dir=output_dir,
            batches=batches,
            labels=parity_labels,
            fake_quantized_logits=reference,
        )
        quantization_config, quantized_path = int8_choice.config, int8_choice.path
        # A quantization-aware student's int8 graph was gated against its fake-quantized self in the chain; its
        # agreement with the fp32 graph (what it was not trained to compute) is reported, not gated.
        int8_kwargs = parity_kwargs | ({"min_agreement": 0.0} if qat else {})
        parity["int8"] = check_parity(torch_model, onnx_path, quantized_path=quantized_path, **int8_kwargs)
        logger.info(f"int8 ({quantize}) top-1 agreement with fp32: {parity['int8'].agreement:.2%}")

    # ORTOptimizer and ORTQuantizer each overwrite ort_config.json with their half: record both.
    ORTConfig(optimization=optimization_config, quantization=quantization_config).save_pretrained(output_dir)
    config.save_pretrained(output_dir)

    files = {"fp32": onnx_path, "optimized": optimized_path, "int8": quantized_path}
    summary = {
        "arguments": asdict(args) | {"max_length": max_length},
        "task": _task(config),
        "ort_model_class": ort_class.__name__,
        "calibration": calibration,
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
        output_dir=output_dir,
        onnx_path=onnx_path,
        optimized_path=optimized_path,
        quantized_path=quantized_path,
        summary_path=summary_path,
        parity=parity,
        int8_choice=int8_choice,
    )
