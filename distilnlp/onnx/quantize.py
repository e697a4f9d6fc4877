"""int8 quantization with `onnxruntime.quantization`: presets named after the CPU, one settings record per graph.

    settings = QuantizationSettings.for_preset("avx512_vnni", is_static=False, per_channel=True)
    quantize_graph("model.onnx", "model_quantized.onnx", settings)

Dynamic quantization (`quantize_dynamic`) turns weight MatMuls / Gathers / fused `Attention` into `MatMulInteger`,
`QAttention` ...: weights symmetric int8 (uint8 on `avx2`), activations uint8 with the range of each batch. Static
quantization (`quantize_static`, QDQ format) calibrates activation ranges on the task's texts (`CalibrationTexts`).
"""

from __future__ import annotations

import logging as py_logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import PretrainedConfig, PreTrainedTokenizerBase
from transformers.utils import logging

from ..int8.presets import PRESETS, default_preset, reduce_range, weight_type
from .parity import _pad, synthetic_features

__all__ = ["PRESETS", "CalibrationTexts", "QuantizationSettings", "default_preset", "quantize_graph"]

logger = logging.get_logger(__name__)

# Static quantization covers the weight-heavy ops only. ORT's default static list also takes Where/Add/Mul, which
# pulls the attention-mask tensors (filled with float32 min, -3.4e38) into calibration: the entropy and
# percentile histograms then fail ("Too many bins for data range"), and quantizing them buys no speed.
STATIC_OPERATORS = ("MatMul", "Gemm", "Gather")


@dataclass
class QuantizationSettings:
    """Everything that decides an int8 graph; recorded as is in `distilnlp_export.json`."""

    preset: str
    is_static: bool
    per_channel: bool
    weight_type: str  # onnxruntime.quantization.QuantType name
    reduce_range: bool = False  # 7-bit weights (the avx512 preset: see distilnlp.int8.presets)
    activation_type: str = "QUInt8"
    # None: ORT's dynamic defaults (every op it can make integer, fused Attention included); static: STATIC_OPERATORS
    operators: list[str] | None = None
    nodes_to_exclude: list[str] = field(default_factory=list)
    calibration_method: str | None = None  # static only

    @classmethod
    def for_preset(
        cls,
        preset: str,
        is_static: bool,
        per_channel: bool,
        nodes_to_exclude: Sequence[str] = (),
        calibration_method: str = "minmax",
    ) -> QuantizationSettings:
        return cls(
            preset=preset,
            is_static=is_static,
            per_channel=per_channel,
            weight_type=weight_type(preset),
            reduce_range=reduce_range(preset),
            operators=list(STATIC_OPERATORS) if is_static else None,
            nodes_to_exclude=list(nodes_to_exclude),
            calibration_method=calibration_method if is_static else None,
        )


# Weights symmetric (zero point 0 / 128), activations asymmetric; attention's activation-activation MatMuls are
# quantized too unless excluded, as Optimum's ORTQuantizer did (the int8 graphs distilnlp shipped before).
_EXTRA_OPTIONS = {"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": False}


def quantize_graph(
    source: str | Path,
    target: str | Path,
    settings: QuantizationSettings,
    calibration: CalibrationTexts | None = None,
) -> Path:
    """Write the int8 graph of `source` to `target` (static quantization needs `calibration`)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    common = {
        "per_channel": settings.per_channel,
        "reduce_range": settings.reduce_range,
        "weight_type": QuantType[settings.weight_type],
        "nodes_to_exclude": list(settings.nodes_to_exclude),
        "op_types_to_quantize": settings.operators,
        "extra_options": dict(_EXTRA_OPTIONS),
    }
    quiet = (
        py_logging.getLogger()
    )  # ORT logs a pre-processing hint at WARNING on the root logger for every graph
    level, quiet.level = quiet.level, max(quiet.level, py_logging.ERROR)
    try:
        if not settings.is_static:
            quantize_dynamic(str(source), str(target), **common)
        else:
            if calibration is None:
                raise ValueError("Static quantization needs calibration data.")
            method = {
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[settings.calibration_method]
            calibration.rewind()
            quantize_static(
                str(source),
                str(target),
                calibration,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType[settings.activation_type],
                calibrate_method=method,
                **common,
            )
    finally:
        quiet.level = level
    return target


class CalibrationTexts:
    """An `onnxruntime.quantization.CalibrationDataReader` over model inputs padded to `max_length`.

    Built from the task's texts, or, with none, from random token ids (poor activation ranges: a warning says so).
    """

    def __init__(
        self,
        config: PretrainedConfig,
        tokenizer: PreTrainedTokenizerBase | None,
        texts: Sequence[str] | None,
        num_samples: int,
        max_length: int,
        input_names: Sequence[str],
        batch_size: int = 8,
    ):
        if texts:
            if tokenizer is None:
                raise ValueError("Calibration texts need a tokenizer; none was found with the model.")
            encoded = tokenizer(
                list(texts)[:num_samples],
                padding="max_length",
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            batch = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
        else:
            logger.warning(
                "Static quantization without calibration_texts: calibrating on random token ids, which gives poor "
                "activation ranges. Pass texts from the task's data."
            )
            pad_id = config.pad_token_id if config.pad_token_id is not None else 0
            examples = synthetic_features(config, tokenizer, num_samples, max_length, seed=1)
            batch = _pad(examples, pad_id, length=max_length)
        missing = [n for n in input_names if n not in batch]
        if missing:
            raise ValueError(f"Calibration data lacks the graph inputs {missing}.")
        self.num_samples = len(batch["input_ids"])
        self._batches = [
            {n: batch[n][i : i + batch_size] for n in input_names}
            for i in range(0, self.num_samples, batch_size)
        ]
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._batches)
