"""Choose an int8 graph that keeps accuracy: the default quantization first, then per-channel weights, then the
most sensitive nodes kept in fp32.

    choice = choose_int8(quantize, validation, gate, per_channel=False, max_fp32_nodes=8, work_dir=tmp)

`quantize(per_channel, nodes_to_exclude, save_dir)` writes one candidate graph (Optimum's `ORTQuantizer`);
`validation` holds the fp32 graph's logits on validation texts (and their labels, when known), against which each
candidate is scored; `gate` says what passes. The chain stops at the first candidate that passes:

1. the requested quantization (per-tensor weights unless `per_channel`);
2. per-channel weights (one scale per output column of each weight matrix: an outlier column no longer crushes
   the resolution of the others);
3. a sensitivity pass: for every quantizable node (MatMul, Gemm, a Gather of an embedding table), quantize
   everything *except* that node and measure the mean squared logit error against fp32; the nodes whose exclusion
   lowers the error most are the most sensitive. Then keep the top 1, 2, ... `max_fp32_nodes` of them in fp32
   until the gate passes (per-tensor activations are what per-channel weights cannot fix: an outlier activation
   feeding one MatMul is fixed only by leaving that MatMul in fp32).

Every attempt is recorded (agreement, accuracy, logit error) so the export summary says what was tried and why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers.utils import logging

from .parity import ParityError, ParityReport, _run_session, _session

logger = logging.get_logger(__name__)

# Ops that ORT's int8 quantizers touch in the graphs distilnlp quantizes (unfused exports). MatMul counts with two
# activation inputs too (attention scores); a Gather only when it reads an initializer (an embedding table, not a
# Shape output).
MATMUL_OPS = ("MatMul", "Gemm")
GATHER_OPS = ("Gather",)


@dataclass
class Int8Gate:
    """What an int8 graph must keep: `min_agreement` top-1 agreement with fp32 and, when labels are known, an
    accuracy at most `max_accuracy_drop` (absolute, 0.005 = half a point) below the fp32 graph's."""

    min_agreement: float = 0.99
    max_accuracy_drop: float = 0.005


@dataclass
class Int8Attempt:
    """One candidate int8 graph and its scores on the validation inputs."""

    name: str
    per_channel: bool
    fp32_nodes: list[str]
    agreement: float
    accuracy: float | None
    accuracy_drop: float | None
    logit_mse: float
    passed: bool


@dataclass
class Int8Choice:
    """The chain's outcome: every attempt in order, the chosen one (the last, when it passed) and the
    sensitivity ranking {node: logit MSE with only that node in fp32} when the pass ran."""

    attempts: list[Int8Attempt]
    path: Path
    fp32_accuracy: float | None
    num_samples: int
    sensitivity: dict[str, float] | None = None
    fake_quant_parity: dict | None = None  # quantization-aware students: int8 graph vs fake-quantized PyTorch
    config: object | None = field(default=None, repr=False)  # the QuantizationConfig of the chosen graph

    @property
    def chosen(self) -> Int8Attempt:
        return self.attempts[-1]

    def summary(self) -> dict:
        from dataclasses import asdict

        return {
            "chosen": self.chosen.name,
            "per_channel": self.chosen.per_channel,
            "fp32_nodes": self.chosen.fp32_nodes,
            "fp32_accuracy": self.fp32_accuracy,
            "num_samples": self.num_samples,
            "attempts": [asdict(a) for a in self.attempts],
            "sensitivity": self.sensitivity,
            "fake_quant_parity": self.fake_quant_parity,
        }


class ValidationSet:
    """Validation batches, the fp32 graph's logits on them and, optionally, labels (one per example).

    Token-classification graphs (logits of shape (batch, length, labels)) are scored per real token and take no
    labels here.
    """

    def __init__(
        self,
        fp32_path: str | os.PathLike,
        batches: Sequence[dict[str, np.ndarray]],
        labels: Sequence[int] | None = None,
    ):
        self.batches = list(batches)
        session = _session(fp32_path)
        self.fp32_logits = [_run_session(session, b) for b in self.batches]
        self.token_level = self.fp32_logits[0].ndim == 3
        self.num_samples = sum(len(b["input_ids"]) for b in self.batches)
        if labels is not None and (self.token_level or len(labels) < self.num_samples):
            raise ValueError(
                f"Validation labels must be one per example for sequence classification; got {len(labels)} "
                f"labels for {self.num_samples} examples{' of a token-level model' if self.token_level else ''}."
            )
        self.labels = None if labels is None else np.asarray(list(labels)[: self.num_samples])
        self.fp32_accuracy = self._accuracy(self.fp32_logits)

    def _accuracy(self, logits: list[np.ndarray]) -> float | None:
        if self.labels is None:
            return None
        return float((np.concatenate(logits).argmax(-1) == self.labels).mean())

    def score(self, path: str | os.PathLike) -> tuple[float, float | None, float]:
        """(top-1 agreement with fp32, accuracy or None, mean squared logit error) of the graph at `path`."""
        session = _session(path)
        agree = total = 0
        squared = count = 0.0
        logits = []
        for batch, reference in zip(self.batches, self.fp32_logits, strict=True):
            q = _run_session(session, batch)
            logits.append(q)
            mask = batch["attention_mask"].astype(bool) if self.token_level else np.ones(len(q), dtype=bool)
            agree += int((q.argmax(-1) == reference.argmax(-1))[mask].sum())
            total += int(mask.sum())
            squared += float(((q - reference) ** 2)[mask].sum())
            count += float(mask.sum()) * q.shape[-1]
        return agree / total, self._accuracy(logits), squared / count


def quantizable_nodes(onnx_path: str | os.PathLike) -> dict[str, str]:
    """{name: op type} of the nodes of the fp32 graph that int8 quantization turns into integer ops, in graph
    order: the candidates of the sensitivity pass."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return {
        node.name: node.op_type
        for node in graph.node
        if node.name
        and (node.op_type in MATMUL_OPS or (node.op_type in GATHER_OPS and node.input[0] in initializers))
    }


def _exclusions(nodes: Sequence[str], op_types: dict[str, str]) -> list[str]:
    """`nodes_to_exclude` for ORT: ORT's dynamic (QOperator) quantizer first rewrites each Gemm as a MatMul named
    `<gemm name>_MatMul` (+ Add) and matches the exclusions against the new name, so name both."""
    return [*nodes, *(f"{n}_MatMul" for n in nodes if op_types.get(n) == "Gemm")]


Quantize = Callable[[bool, list[str], Path], tuple[Path, object]]


def choose_int8(
    quantize: Quantize,
    validation: ValidationSet,
    gate: Int8Gate,
    *,
    candidates: Sequence[str],
    work_dir: str | os.PathLike,
    per_channel: bool = False,
    fallback: bool = True,
    max_fp32_nodes: int = 8,
) -> Int8Choice:
    """Run the chain described in the module docstring; return the first passing attempt.

    `quantize(per_channel, nodes_to_exclude, save_dir)` returns (path of the int8 graph, its config);
    `candidates` are the node names the sensitivity pass may keep in fp32 (see `quantizable_nodes`).

    Raises:
        ParityError: no attempt passed; the message names the best attempt's agreement and accuracy drop.
    """
    work_dir = Path(work_dir)
    choice = Int8Choice([], Path(), validation.fp32_accuracy, validation.num_samples)

    def attempt(name: str, channel: bool, fp32_nodes: list[str]) -> Int8Attempt:
        save_dir = work_dir / f"attempt{len(choice.attempts)}"
        path, config = quantize(channel, fp32_nodes, save_dir)
        agreement, accuracy, mse = validation.score(path)
        drop = None if accuracy is None else validation.fp32_accuracy - accuracy
        passed = agreement >= gate.min_agreement and (drop is None or drop <= gate.max_accuracy_drop)
        result = Int8Attempt(name, channel, list(fp32_nodes), agreement, accuracy, drop, mse, passed)
        choice.attempts.append(result)
        choice.path, choice.config = path, config
        logger.info(f"int8 {name}: {_describe(result)}{'' if passed else ' (fails the gate)'}")
        return result

    first = attempt("per-channel" if per_channel else "default", per_channel, [])
    if first.passed or not fallback:
        return _finish(choice, gate)
    base = first
    if not per_channel:
        channel = attempt("per-channel", True, [])
        if channel.passed:
            return _finish(choice, gate)
        base = min(first, channel, key=lambda a: a.logit_mse)
    if max_fp32_nodes == 0:
        return _finish(choice, gate)

    # Sensitivity: quantize all but one node at a time, on top of the better of the two attempts above.
    sensitivity = {}
    for node in candidates:
        path, _ = quantize(base.per_channel, [node], work_dir / "sensitivity")
        sensitivity[node] = validation.score(path)[2]
    choice.sensitivity = dict(sorted(sensitivity.items(), key=lambda kv: kv[1]))
    ranked = list(choice.sensitivity)
    mode = "per-channel" if base.per_channel else "per-tensor"
    for k in range(1, min(max_fp32_nodes, len(ranked)) + 1):
        if attempt(f"{mode} + {k} fp32 node{'s' * (k > 1)}", base.per_channel, ranked[:k]).passed:
            return _finish(choice, gate)
    return _finish(choice, gate)


def _describe(a: Int8Attempt) -> str:
    text = f"top-1 agreement {a.agreement:.2%}"
    if a.accuracy is not None:
        text += f", accuracy {a.accuracy:.2%} ({-a.accuracy_drop * 100:+.2f} points vs fp32)"
    return text


def _finish(choice: Int8Choice, gate: Int8Gate) -> Int8Choice:
    if choice.chosen.passed:
        return choice
    best = max(choice.attempts, key=lambda a: (a.agreement, -(a.accuracy_drop or 0.0)))
    accuracy = ""
    if best.accuracy is not None:
        accuracy = (
            f" and loses {best.accuracy_drop * 100:.2f} accuracy points ({choice.fp32_accuracy:.2%} -> "
            f"{best.accuracy:.2%}; max_accuracy_drop={gate.max_accuracy_drop:g})"
        )
    raise ParityError(
        f"No int8 graph keeps the fp32 model's predictions on {choice.num_samples} validation inputs: the best of "
        f"{len(choice.attempts)} attempts ({best.name}) agrees on {best.agreement:.2%} of top-1 predictions "
        f"(min_agreement={gate.min_agreement:g}){accuracy}. Raise --max_fp32_nodes, try --quantize static, or "
        "loosen --min_agreement / --max_accuracy_drop.",
        ParityReport(
            choice.num_samples, agreement=best.agreement, threshold_min_agreement=gate.min_agreement
        ),
    )


def quantize_and_choose(
    quantizer,
    args,
    *,
    is_static: bool,
    ranges: dict | None,
    onnx_path: Path,
    output_dir: Path,
    batches: Sequence[dict[str, np.ndarray]],
    labels: Sequence[int] | None,
    quantization_aware: bool = False,
) -> Int8Choice:
    """`choose_int8` with Optimum's `ORTQuantizer` (built on `onnx_path`); the chosen graph is moved to
    `output_dir / QUANTIZED_FILE`. `args` is the export's `ExportArguments` (preset, per_channel, gate, chain).

    A `quantization_aware` student is quantized as it was trained: per-channel weights, attention's activation
    products in fp32 (`qat_nodes_to_exclude`)."""
    import shutil
    import tempfile

    from ..artifacts import QUANTIZED_FILE
    from ..quantization_aware import qat_nodes_to_exclude
    from .quantize import _quantization_config

    candidates = quantizable_nodes(onnx_path)
    always = qat_nodes_to_exclude(onnx_path) if quantization_aware else []
    candidates = {n: op for n, op in candidates.items() if n not in always}

    def quantize(per_channel: bool, nodes_to_exclude: list[str], save_dir: Path) -> tuple[Path, object]:
        excluded = always + _exclusions(nodes_to_exclude, candidates)
        config = _quantization_config(args.preset, is_static, per_channel, excluded)
        quantizer.quantize(config, save_dir=save_dir, calibration_tensors_range=ranges)
        return Path(save_dir) / QUANTIZED_FILE, config

    validation = ValidationSet(onnx_path, batches, labels)
    gate = Int8Gate(min_agreement=args.min_agreement, max_accuracy_drop=args.max_accuracy_drop)
    with tempfile.TemporaryDirectory(
        dir=output_dir
    ) as tmp:  # candidates are scratch; the same disk for the move
        choice = choose_int8(
            quantize,
            validation,
            gate,
            candidates=list(candidates),
            work_dir=tmp,
            per_channel=args.per_channel or quantization_aware,
            fallback=args.fallback,
            max_fp32_nodes=args.max_fp32_nodes,
        )
        choice.path = Path(shutil.move(choice.path, output_dir / QUANTIZED_FILE))
    return choice
