"""What `distilnlp export` is asked to do (`ExportArguments`, parsed from the command line or built in Python) and
the task's texts it works with (`ExportTexts`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..int8.presets import PRESETS, default_preset

OPTIMIZATION_LEVELS = (0, 1, 2)
QUANTIZATION_MODES = ("none", "dynamic", "static")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


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
class ExportTexts:
    """The task's texts an export uses; all optional (synthetic token ids stand in for missing parity texts)."""

    parity_texts: Sequence[str] | None = None  # the parity checks and the int8 gate (the validation split)
    parity_labels: Sequence[int] | None = None  # one label id per parity text: the gate's accuracy check
    calibration_texts: Sequence[str] | None = None  # static quantization's calibration (the training split)
    vocabulary_texts: Sequence[str] | None = None  # every text the trimmed vocabulary must cover
    max_length: int = 128  # inputs are cut (calibration: padded) to this many tokens
