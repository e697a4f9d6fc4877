"""Optimization and int8 quantization configs for Optimum's `ORTOptimizer` / `ORTQuantizer`: presets named
after the CPU, the static operator list, and calibration data."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

from transformers import PretrainedConfig, PreTrainedTokenizerBase
from transformers.utils import logging

from .parity import _pad, synthetic_features

logger = logging.get_logger(__name__)

OPTIMIZATION_LEVELS = (0, 1, 2)
QUANTIZATION_MODES = ("none", "dynamic", "static")
PRESETS = ("avx512_vnni", "avx512", "avx2", "arm64")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


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


def _quantization_config(
    preset: str, is_static: bool, per_channel: bool, nodes_to_exclude: Sequence[str] | None = None
):
    from optimum.onnxruntime import AutoQuantizationConfig

    operators = STATIC_OPERATORS if is_static else None  # None: ORT's dynamic (IntegerOps) defaults
    return getattr(AutoQuantizationConfig, preset)(
        is_static=is_static,
        per_channel=per_channel,
        operators_to_quantize=operators,
        nodes_to_exclude=list(nodes_to_exclude or []),
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
