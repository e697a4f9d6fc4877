"""Parity checks of exported graphs: fp32 ONNX vs PyTorch (max |logit difference|) and int8 vs fp32
(top-1 agreement), on real texts or synthetic token ids."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..runs.model_files import saved_tokenizer
from .tasks import load_for_export

logger = logging.get_logger(__name__)

# Batch size of the parity forward passes: big enough to be quick, small enough for little padding.
_PARITY_BATCH = 16


class ParityError(ValueError):
    """An exported graph does not reproduce its reference closely enough."""

    def __init__(self, message: str, report: ParityReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class ParityReport:
    """Measured parity figures. `None` where a comparison was not made.

    `max_abs_diff` is the max |logit difference| of the graph checked against its reference: fp32 ONNX vs
    PyTorch, or (a report with `agreement`) int8 vs fp32 ONNX, which no threshold gates.
    """

    num_samples: int
    max_abs_diff: float | None = None
    agreement: float | None = None  # every flipped top-1 prediction counts
    threshold_max_abs_diff: float | None = None
    threshold_min_agreement: float | None = None
    decisive_agreement: float | None = None  # flips within `tie_margin` do not count: what is gated
    tie_margin: float | None = None

    def __str__(self) -> str:
        parts = []
        if self.agreement is not None:
            parts.append(
                f"top-1 agreement {self.decisive_agreement:.2%} outside ties (>= {self.threshold_min_agreement:.2%}; "
                f"{self.agreement:.2%} with ties)"
            )
        elif self.max_abs_diff is not None:
            parts.append(
                f"max |logit difference| {self.max_abs_diff:.2e} (<= {self.threshold_max_abs_diff:g})"
            )
        return f"{', '.join(parts)} on {self.num_samples} inputs"


# ---------------------------------------------------------------------------------------------- input data


def _load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase | None:
    try:
        return saved_tokenizer(path)
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
            _with_word_starts(
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


def _with_word_starts(encoding) -> dict[str, np.ndarray]:
    """The batch, plus `word_starts` (B, T): True at the first subword of each word (of a fast tokenizer's
    pre-tokenization), where a token classifier's per-word prediction is read. Graph inputs are picked by name,
    so the extra key reaches no model."""
    batch = dict(encoding)
    if getattr(encoding, "is_fast", False):
        starts = np.zeros(batch["input_ids"].shape, dtype=bool)
        for row in range(len(starts)):
            previous = None
            for position, word in enumerate(encoding.word_ids(row)):
                starts[row, position] = word is not None and word != previous
                previous = word
        batch["word_starts"] = starts
    return batch


def predicted_positions(batch: dict[str, np.ndarray], logits: np.ndarray, words: bool = True) -> np.ndarray:
    """Boolean mask of the entries of `logits` that carry a prediction: for token-level logits (B, T, C) the
    first subword of each word (`words`, when the batch has `word_starts`: what a tagger predicts per word),
    else every real token; (B,) all True for sequence logits (B, C)."""
    if logits.ndim == 3:
        if words and "word_starts" in batch:
            return batch["word_starts"] & batch["attention_mask"].astype(bool)
        return batch["attention_mask"].astype(bool)
    return np.ones(len(logits), dtype=bool)


def decisive_agreement(reference: np.ndarray, other: np.ndarray, tie_margin: float) -> np.ndarray:
    """Per prediction (logits (..., C) -> (...)): True where `other` picks the reference's top-1 class, or a class
    whose reference probability is within `tie_margin` of the top-1's (a near-tie, which any rounding may flip and
    which was a coin flip to begin with). `tie_margin=0` counts every flip."""
    shifted = np.exp(reference - reference.max(-1, keepdims=True))
    probabilities = shifted / shifted.sum(-1, keepdims=True)
    picked = np.take_along_axis(probabilities, other.argmax(-1)[..., None], -1)[..., 0]
    return probabilities.max(-1) - picked <= tie_margin


@dataclass
class _Tally:
    """Running figures of a parity check over its batches."""

    max_diff: float = 0.0  # fp32 ONNX vs PyTorch
    int8_diff: float = 0.0  # int8 vs fp32 ONNX
    agree: int = 0
    decisive: int = 0
    total: int = 0


def _compare_batches(model, fp32, int8, batches, onnx_path, tie_margin: float) -> _Tally:
    """Run PyTorch, the fp32 graph and (if any) the int8 graph on every batch; tally their differences over the
    positions that carry a prediction."""
    tally = _Tally()
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
            mask = predicted_positions(batch, onnx_logits)
            real = predicted_positions(batch, onnx_logits, words=False)  # fp32 parity: every real token
            tally.max_diff = max(
                tally.max_diff, float(np.abs(onnx_logits - torch_logits)[real].max(initial=0.0))
            )
            if int8 is not None:
                q_logits = _run_session(int8, batch)
                diff = float(np.abs(q_logits - onnx_logits)[mask].max(initial=0.0))
                tally.int8_diff = max(tally.int8_diff, diff)
                tally.agree += int((q_logits.argmax(-1) == onnx_logits.argmax(-1))[mask].sum())
                tally.decisive += int(decisive_agreement(onnx_logits, q_logits, tie_margin)[mask].sum())
                tally.total += int(mask.sum())
    return tally


def _report(tally: _Tally, num_samples: int, quantized: bool, max_abs_diff, min_agreement, tie_margin):
    """The `ParityReport` of a check: of the int8 graph when `quantized`, else of the fp32 graph."""
    return ParityReport(
        num_samples=num_samples,
        max_abs_diff=tally.int8_diff if quantized else tally.max_diff,
        agreement=tally.agree / tally.total if quantized else None,
        threshold_max_abs_diff=max_abs_diff if not quantized else None,
        threshold_min_agreement=min_agreement if quantized else None,
        decisive_agreement=tally.decisive / tally.total if quantized else None,
        tie_margin=tie_margin if quantized else None,
    )


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
    tie_margin: float = 0.1,
) -> ParityReport:
    """Check that `onnx_path` reproduces `reference` and, if given, that `quantized_path` agrees with it.

    `reference` is a PyTorch model or its folder (the tokenizer is then loaded from there too when not given).
    Inputs are `texts` (at most `num_samples`) or, with none, `num_samples` random token-id sequences of varying
    length. Measures (a) the max |logit difference| between fp32 ONNX and PyTorch over real (non-padding)
    positions, and (b) the fraction of top-1 predictions (per example, or per real token for token
    classification) on which the int8 graph agrees with the fp32 graph, not counting flips between classes
    within `tie_margin` of probability (`decisive_agreement`; the raw fraction is reported too). With
    `quantized_path`, the report's `max_abs_diff` is the int8 graph's max |logit difference| from the fp32 graph
    (reported, not gated); (a) is still checked.

    Raises:
        ParityError: when (a) > `max_abs_diff` or (b) < `min_agreement`, or a graph cannot be run.
    """
    if not isinstance(reference, PreTrainedModel):
        if tokenizer is None:
            tokenizer = _load_tokenizer(reference)
        reference = load_for_export(reference, AutoConfig.from_pretrained(reference))
    model = reference.eval()
    batches = _parity_batches(model.config, tokenizer, texts, num_samples, max_length)

    fp32 = _session(onnx_path)
    int8 = _session(quantized_path) if quantized_path is not None else None
    tally = _compare_batches(model, fp32, int8, batches, onnx_path, tie_margin)
    num_inputs = sum(len(b["input_ids"]) for b in batches)
    report = _report(tally, num_inputs, int8 is not None, max_abs_diff, min_agreement, tie_margin)
    if not tally.max_diff <= max_abs_diff:  # also catches NaN
        raise ParityError(
            f"{Path(onnx_path).name} does not reproduce the PyTorch model: max |logit difference| = "
            f"{tally.max_diff:.3g} over {report.num_samples} inputs, above max_abs_diff={max_abs_diff:g}. The "
            "export is wrong, or the difference is expected and the threshold can be raised with --max_abs_diff.",
            replace(report, max_abs_diff=tally.max_diff, threshold_max_abs_diff=max_abs_diff),
        )
    if report.decisive_agreement is not None and report.decisive_agreement < min_agreement:
        raise ParityError(
            f"{Path(quantized_path).name} agrees with the fp32 model on only {report.decisive_agreement:.2%} of "
            f"top-1 predictions ({tally.decisive}/{tally.total}, near-ties within {tie_margin:g} not counted), "
            f"below min_agreement={min_agreement:g}. Try --per_channel, another --quantize mode or "
            "--calibration_method, or lower the threshold with --min_agreement.",
            report,
        )
    return report
