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
fp32 ONNX (top-1 agreement); a failed check raises `ParityError`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging

logger = logging.get_logger(__name__)

OPTIMIZATION_LEVELS = (0, 1, 2)
QUANTIZATION_MODES = ("none", "dynamic", "static")
PRESETS = ("avx512_vnni", "avx512", "avx2", "arm64")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

ONNX_FILE = "model.onnx"
OPTIMIZED_FILE = "model_optimized.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
SUMMARY_FILE = "distilnlp_export.json"
ORT_CONFIG_FILE = "ort_config.json"

# Batch size of the parity forward passes: big enough to be quick, small enough for little padding.
_PARITY_BATCH = 16


class ParityError(ValueError):
    """An exported graph does not reproduce its reference closely enough."""

    def __init__(self, message: str, report: ParityReport | None = None):
        super().__init__(message)
        self.report = report


def default_preset() -> str:
    """The `AutoQuantizationConfig` preset that fits the CPU this runs on."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


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
    per_channel: bool = field(default=False, metadata={"help": "Quantize weights per output channel."})
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
    parity_samples: int = field(
        default=256,
        # Enough that one flipped prediction out of a few hundred does not fail a 0.99 threshold by itself.
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
        if not self.max_abs_diff > 0:
            raise ValueError(f"max_abs_diff must be > 0; got {self.max_abs_diff}.")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1]; got {self.min_agreement}.")
        if self.parity_samples < 1:
            raise ValueError(f"parity_samples must be >= 1; got {self.parity_samples}.")


@dataclass
class ParityReport:
    """Measured parity figures. `None` where a comparison was not made."""

    num_samples: int
    max_abs_diff: float | None = None
    agreement: float | None = None
    threshold_max_abs_diff: float | None = None
    threshold_min_agreement: float | None = None

    def __str__(self) -> str:
        parts = []
        if self.agreement is not None:
            parts.append(f"top-1 agreement {self.agreement:.2%} (>= {self.threshold_min_agreement:.2%})")
        elif self.max_abs_diff is not None:
            parts.append(
                f"max |logit difference| {self.max_abs_diff:.2e} (<= {self.threshold_max_abs_diff:g})"
            )
        return f"{', '.join(parts)} on {self.num_samples} inputs"


@dataclass
class ExportResult:
    """Paths written by `export_model` and the parity figures of each graph."""

    output_dir: Path
    onnx_path: Path
    optimized_path: Path | None
    quantized_path: Path | None
    summary_path: Path
    parity: dict[str, ParityReport]


# --------------------------------------------------------------------------------------------- model classes


def _task(config: PretrainedConfig) -> str:
    """'sequence-classification' or 'token-classification', from the config's architecture."""
    architectures = config.architectures or []
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
        if arch.endswith("ForTokenClassification"):
            return "token-classification"
    raise ValueError(
        f"Cannot export architectures {architectures}: supported are *ForSequenceClassification and "
        "*ForTokenClassification models."
    )


def ort_model_class(config: PretrainedConfig):
    """The Optimum `ORTModelFor*` class for a model config."""
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTModelForTokenClassification

    return {
        "sequence-classification": ORTModelForSequenceClassification,
        "token-classification": ORTModelForTokenClassification,
    }[_task(config)]


def _torch_model_class(config: PretrainedConfig):
    return {
        "sequence-classification": AutoModelForSequenceClassification,
        "token-classification": AutoModelForTokenClassification,
    }[_task(config)]


# ---------------------------------------------------------------------------------------------- input data


def _load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase | None:
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        logger.warning(f"No tokenizer loaded from {path} ({err}); using synthetic token ids.")
        return None


def synthetic_features(
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    num_samples: int,
    max_length: int,
    *,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """`num_samples` unpadded examples of varying length (1-D int64 arrays) made of random non-special tokens."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids) if tokenizer is not None else set()
    special.add(config.pad_token_id if config.pad_token_id is not None else 0)
    vocab = np.array([i for i in range(config.vocab_size) if i not in special], dtype=np.int64)
    bos = getattr(tokenizer, "cls_token_id", None) if tokenizer is not None else None
    eos = getattr(tokenizer, "sep_token_id", None) if tokenizer is not None else None
    max_length = min(max_length, getattr(config, "max_position_embeddings", max_length) or max_length)
    lengths = rng.integers(min(4, max_length), max_length + 1, size=num_samples)
    examples = []
    for length in lengths:
        ids = rng.choice(vocab, size=int(length))
        if bos is not None and eos is not None and length >= 2:
            ids[0], ids[-1] = bos, eos
        examples.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
        )
    return examples


def _pad(
    examples: Sequence[dict[str, np.ndarray]], pad_id: int, length: int | None = None
) -> dict[str, np.ndarray]:
    """Right-pad 1-D examples into a (batch, length) batch (length: the longest, unless given)."""
    length = length or max(len(e["input_ids"]) for e in examples)
    batch = {}
    for key in examples[0]:
        fill = pad_id if key == "input_ids" else 0
        out = np.full((len(examples), length), fill, dtype=np.int64)
        for row, example in enumerate(examples):
            values = example[key][:length]
            out[row, : len(values)] = values
        batch[key] = out
    return batch


def _parity_batches(
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    texts: Sequence[str] | None,
    num_samples: int,
    max_length: int,
) -> list[dict[str, np.ndarray]]:
    """Batches (padded to their longest example) of `texts`, or of synthetic sequences when there are none."""
    if texts:
        if tokenizer is None:
            raise ValueError("Parity texts need a tokenizer; none was found with the model.")
        texts = list(texts)[:num_samples]
        return [
            dict(
                tokenizer(
                    texts[i : i + _PARITY_BATCH],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="np",
                )
            )
            for i in range(0, len(texts), _PARITY_BATCH)
        ]
    examples = synthetic_features(config, tokenizer, num_samples, max_length)
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    return [_pad(examples[i : i + _PARITY_BATCH], pad_id) for i in range(0, len(examples), _PARITY_BATCH)]


# ------------------------------------------------------------------------------------------------- parity


def _session(path: str | os.PathLike):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise ParityError(f"Cannot load ONNX model {path} for the parity check: {err}") from err


def _run_session(session, batch: dict[str, np.ndarray]) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in batch]
    if missing:
        raise ParityError(f"The ONNX model needs inputs {missing} that the tokenizer does not produce.")
    return session.run(None, {n: batch[n].astype(np.int64) for n in names})[0]


def check_parity(
    reference: PreTrainedModel | str | os.PathLike,
    onnx_path: str | os.PathLike,
    *,
    quantized_path: str | os.PathLike | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    texts: Sequence[str] | None = None,
    num_samples: int = 64,
    max_length: int = 128,
    max_abs_diff: float = 1e-4,
    min_agreement: float = 0.99,
) -> ParityReport:
    """Check that `onnx_path` reproduces `reference` and, if given, that `quantized_path` agrees with it.

    `reference` is a PyTorch model or its folder (the tokenizer is then loaded from there too when not given).
    Inputs are `texts` (at most `num_samples`) or, with none, `num_samples` random token-id sequences of varying
    length. Measures (a) the max |logit difference| between fp32 ONNX and PyTorch over real (non-padding)
    positions, and (b) the fraction of top-1 predictions (per example, or per real token for token
    classification) on which the int8 graph agrees with the fp32 graph.

    Raises:
        ParityError: when (a) > `max_abs_diff` or (b) < `min_agreement`, or a graph cannot be run.
    """
    if not isinstance(reference, PreTrainedModel):
        if tokenizer is None:
            tokenizer = _load_tokenizer(reference)
        config = AutoConfig.from_pretrained(reference)
        reference = _torch_model_class(config).from_pretrained(reference)
    model = reference.eval()
    config = model.config
    token_level = _task(config) == "token-classification"
    batches = _parity_batches(config, tokenizer, texts, num_samples, max_length)

    fp32 = _session(onnx_path)
    int8 = _session(quantized_path) if quantized_path is not None else None
    max_diff, agree, total = 0.0, 0, 0
    with torch.inference_mode():
        for batch in batches:
            onnx_logits = _run_session(fp32, batch)
            torch_inputs = {n.name: torch.from_numpy(batch[n.name]) for n in fp32.get_inputs()}
            torch_logits = model(**torch_inputs).logits.float().numpy()
            if onnx_logits.shape != torch_logits.shape:
                raise ParityError(
                    f"ONNX logits have shape {onnx_logits.shape}, PyTorch logits {torch_logits.shape}: "
                    f"{onnx_path} was not exported from this model."
                )
            # Padding positions carry no prediction: compare real tokens only.
            mask = (
                batch["attention_mask"].astype(bool) if token_level else np.ones(len(onnx_logits), dtype=bool)
            )
            max_diff = max(max_diff, float(np.abs(onnx_logits - torch_logits)[mask].max(initial=0.0)))
            if int8 is not None:
                q_logits = _run_session(int8, batch)
                agree += int((q_logits.argmax(-1) == onnx_logits.argmax(-1))[mask].sum())
                total += int(mask.sum())

    report = ParityReport(
        num_samples=sum(len(b["input_ids"]) for b in batches),
        max_abs_diff=max_diff,
        agreement=agree / total if int8 is not None else None,
        threshold_max_abs_diff=max_abs_diff,
        threshold_min_agreement=min_agreement if int8 is not None else None,
    )
    if not max_diff <= max_abs_diff:  # also catches NaN
        raise ParityError(
            f"{Path(onnx_path).name} does not reproduce the PyTorch model: max |logit difference| = {max_diff:.3g} "
            f"over {report.num_samples} inputs, above max_abs_diff={max_abs_diff:g}. The export is wrong, or "
            "the difference is expected and the threshold can be raised with --max_abs_diff.",
            report,
        )
    if report.agreement is not None and report.agreement < min_agreement:
        raise ParityError(
            f"{Path(quantized_path).name} agrees with the fp32 model on only {report.agreement:.2%} of top-1 "
            f"predictions ({agree}/{total}), below min_agreement={min_agreement:g}. Try --per_channel, another "
            "--quantize mode or --calibration_method, or lower the threshold with --min_agreement.",
            report,
        )
    return report


# ------------------------------------------------------------------------------------------------- export


def _optimization_config(level: int):
    from optimum.onnxruntime import AutoOptimizationConfig, OptimizationConfig

    if level == 0:
        # Keep the graph as exported: a baseline to compare the fused variants with.
        return OptimizationConfig(optimization_level=0, enable_transformers_specific_optimizations=False)
    return AutoOptimizationConfig.with_optimization_level(f"O{level}")


# Static quantization covers the weight-heavy ops only. ORT's default static list also takes Where/Add/Mul, which
# pulls the attention-mask tensors (filled with float32 min, -3.4e38) into calibration: the entropy and
# percentile histograms then fail ("Too many bins for data range"), and quantizing them buys no speed.
STATIC_OPERATORS = ["MatMul", "Gemm", "Gather"]


def _quantization_config(preset: str, is_static: bool, per_channel: bool):
    from optimum.onnxruntime import AutoQuantizationConfig

    operators = STATIC_OPERATORS if is_static else None  # None: ORT's dynamic (IntegerOps) defaults
    return getattr(AutoQuantizationConfig, preset)(
        is_static=is_static, per_channel=per_channel, operators_to_quantize=operators
    )


def _calibration_dataset(
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    texts: Sequence[str] | None,
    num_samples: int,
    max_length: int,
    input_names: Sequence[str],
):
    """A `datasets.Dataset` of model inputs padded to `max_length`, with exactly the graph's input columns."""
    import datasets

    if texts:
        if tokenizer is None:
            raise ValueError("Calibration texts need a tokenizer; none was found with the model.")
        raw = datasets.Dataset.from_dict({"text": list(texts)[:num_samples]})
        dataset = raw.map(
            lambda b: tokenizer(b["text"], padding="max_length", truncation=True, max_length=max_length),
            batched=True,
            remove_columns=["text"],
        )
    else:
        logger.warning(
            "Static quantization without calibration_texts: calibrating on random token ids, which gives poor "
            "activation ranges. Pass texts from the task's data."
        )
        pad_id = config.pad_token_id if config.pad_token_id is not None else 0
        examples = synthetic_features(config, tokenizer, num_samples, max_length, seed=1)
        batch = _pad(examples, pad_id, length=max_length)
        dataset = datasets.Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    missing = [n for n in input_names if n not in dataset.column_names]
    if missing:
        raise ValueError(f"Calibration data lacks the graph inputs {missing}.")
    return dataset.select_columns(list(input_names))


def _calibration_config(method: str, dataset):
    from optimum.onnxruntime import AutoCalibrationConfig

    if method == "percentile":
        return AutoCalibrationConfig.percentiles(dataset)
    return getattr(AutoCalibrationConfig, method)(dataset)


def _versions() -> dict[str, str]:
    import onnxruntime
    import optimum.version
    import transformers

    try:
        from importlib.metadata import version

        optimum_onnx = version("optimum-onnx")
    except Exception:  # not installed as a distribution
        optimum_onnx = "unknown"
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "optimum": optimum.version.__version__,
        "optimum-onnx": optimum_onnx,
    }


def export_model(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    optimize: int | None = None,
    quantize: str = "dynamic",
    preset: str | None = None,
    per_channel: bool = False,
    calibration_texts: Sequence[str] | None = None,
    calibration_samples: int = 128,
    calibration_method: str = "minmax",
    parity_texts: Sequence[str] | None = None,
    parity_samples: int = 256,
    max_abs_diff: float = 1e-4,
    min_agreement: float = 0.99,
    max_length: int = 128,
) -> ExportResult:
    """Export `model_dir` to ONNX in `output_dir`, optionally optimize and int8-quantize it, and check parity.

    The int8 graph is quantized from the exported (unfused) `model.onnx`, not from the optimized one: ORT's
    quantizer cannot type the outputs of fused contrib ops (`Attention`, `SkipLayerNormalization`) and fails with
    "Unable to find data type for weight_name". (Symbolic shape inference on the fused graph gets past that, but
    its int8 graph, with QAttention, ran no faster on CPU than the int8 unfused graph.) Arguments mirror `ExportArguments`; `calibration_texts` feed static quantization (padded to
    `max_length`), `parity_texts` the parity checks (synthetic token ids when None).

    Raises:
        ParityError: a graph does not reproduce its reference within the thresholds.
    """
    from optimum.onnxruntime import ORTConfig, ORTOptimizer, ORTQuantizer

    # Validate exactly as the command line does.
    args = ExportArguments(
        model_dir=str(model_dir),
        output_dir=str(output_dir),
        optimize=optimize,
        quantize=quantize,
        preset=preset,
        per_channel=per_channel,
        calibration_samples=calibration_samples,
        calibration_method=calibration_method,
        max_abs_diff=max_abs_diff,
        min_agreement=min_agreement,
        parity_samples=parity_samples,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in (OPTIMIZED_FILE, QUANTIZED_FILE, ORT_CONFIG_FILE, SUMMARY_FILE):
        (output_dir / stale).unlink(missing_ok=True)

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

    quantization_config = quantized_path = None
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
        quantizer.quantize(quantization_config, save_dir=output_dir, calibration_tensors_range=ranges)
        quantized_path = output_dir / QUANTIZED_FILE
        parity["int8"] = check_parity(torch_model, onnx_path, quantized_path=quantized_path, **parity_kwargs)
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
        "versions": _versions(),
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
    )
