"""Choose an int8 graph that keeps accuracy: the fused graph first, then the unfused one with per-channel weights,
then with the most sensitive nodes kept in fp32.

    choice = choose_int8(quantize, validation, gate, per_channel=False, max_fp32_nodes=8, work_dir=tmp)

`quantize(per_channel, nodes_to_exclude, save_dir)` writes one candidate graph (`onnxruntime.quantization`);
`validation` holds the fp32 graph's logits on validation texts (and their labels, when known), against which each
candidate is scored; `gate` says what passes. The chain stops at the first candidate that passes:

0. the fused graph (`quantize_fused`, when ONNX Runtime has fusions for the architecture; dynamic quantization
   only): ORT's transformer fusions (`Attention`, `SkipLayerNormalization`, `BiasGelu`) quantized to `QAttention`
   and `MatMulInteger`, the fastest int8 graph on CPU (1.06x the fully int8 unfused one at batch 1 on the 1-layer student),
   per-tensor then per-channel weights; then, on the unfused graph:
1. the requested quantization (per-tensor weights unless `per_channel`);
2. per-channel weights (one scale per output column of each weight matrix: an outlier column no longer crushes
   the resolution of the others);
3. a sensitivity pass: for every quantizable node (MatMul, Gemm, a Gather of an embedding table), quantize
   everything *except* that node and measure the mean squared logit error against fp32; the nodes whose exclusion
   lowers the error most are the most sensitive. Then keep the top 1, 2, ... `max_fp32_nodes` of them in fp32
   until the gate passes (per-tensor activations are what per-channel weights cannot fix: an outlier activation
   feeding one MatMul is fixed only by leaving that MatMul in fp32). A node holding more than a quarter of the
   graph's weights (a small student's word embeddings: 11.7 M of a 1-layer MiniLM's 13.8 M parameters) is ranked
   after all the others unless it is clearly the culprit: keeping it in fp32 would undo most of what int8 saves
   in size.

The reference is the fp32 graph, or, for a quantization-aware student, the fake-quantized PyTorch student (what it
was trained and evaluated as; its fp32 graph is not what it learned to compute).

Every attempt is recorded (agreement, accuracy, logit error) so the export summary says what was tried and why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers.utils import logging

from ..int8.quantization_aware import qat_nodes_to_exclude
from ..runs.artifacts import QUANTIZED_FILE
from .fusion import FusedGraph
from .parity import (
    ParityError,
    ParityReport,
    _run_session,
    _session,
    decisive_agreement,
    predicted_positions,
)
from .quantize import CalibrationTexts, QuantizationSettings, quantize_graph

logger = logging.get_logger(__name__)

# Ops that ORT's int8 quantizers touch in the graphs distilnlp quantizes (unfused exports). MatMul counts with two
# activation inputs too (attention scores); a Gather only when it reads an initializer (an embedding table, not a
# Shape output).
MATMUL_OPS = ("MatMul", "Gemm")
GATHER_OPS = ("Gather",)


@dataclass
class Int8Gate:
    """What an int8 graph must keep: `min_agreement` top-1 agreement with the reference, flips between classes
    within `tie_margin` of probability not counted (`parity.decisive_agreement`), and, when labels are known, an
    accuracy at most `max_accuracy_drop` (absolute, 0.005 = half a point) below the reference's."""

    min_agreement: float = 0.99
    max_accuracy_drop: float = 0.005
    tie_margin: float = 0.1

    def passes(self, agreement: float, accuracy_drop: float | None) -> bool:
        return agreement >= self.min_agreement and (
            accuracy_drop is None or accuracy_drop <= self.max_accuracy_drop
        )


@dataclass
class Int8Attempt:
    """One candidate int8 graph and its scores on the validation inputs."""

    name: str
    fused: bool
    per_channel: bool
    fp32_nodes: list[str]
    agreement: float  # near-ties not counted: what the gate reads
    raw_agreement: float  # every flip counted
    accuracy: float | None
    accuracy_drop: float | None
    logit_mse: float
    max_abs_diff: float
    passed: bool


@dataclass
class Int8Choice:
    """The chain's outcome: every attempt in order, the chosen one (the last, when it passed) and the
    sensitivity ranking {node: logit MSE with only that node in fp32} when the pass ran."""

    attempts: list[Int8Attempt]
    path: Path
    fp32_accuracy: float | None  # the reference's (fp32 graph or fake-quantized student) validation accuracy
    num_samples: int
    reference: str = "fp32 graph"
    sensitivity: dict[str, float] | None = None
    fused_ops: dict[str, int] | None = None  # the fused graph's contrib ops; None: no fused graph was tried
    settings: QuantizationSettings | None = field(default=None, repr=False)  # of the chosen graph

    @property
    def chosen(self) -> Int8Attempt:
        return self.attempts[-1]

    def summary(self) -> dict:
        from dataclasses import asdict

        return {
            "chosen": self.chosen.name,
            "fused": self.chosen.fused,
            "per_channel": self.chosen.per_channel,
            "fp32_nodes": self.chosen.fp32_nodes,
            "reference": self.reference,
            "fp32_accuracy": self.fp32_accuracy,
            "num_samples": self.num_samples,
            "attempts": [asdict(a) for a in self.attempts],
            "sensitivity": self.sensitivity,
            "fused_ops": self.fused_ops,
            "quantization": asdict(self.settings) if self.settings is not None else None,
        }


class ValidationSet:
    """Validation batches, the reference logits on them and, optionally, labels (one per example).

    The reference is the graph at `fp32_path`, or `reference_logits` (one array per batch) when given: a
    quantization-aware student's fake-quantized logits. Token-classification graphs (logits of shape
    (batch, length, labels)) are scored per real token and take no labels here.
    """

    def __init__(
        self,
        fp32_path: str | os.PathLike,
        batches: Sequence[dict[str, np.ndarray]],
        labels: Sequence[int] | None = None,
        reference_logits: Sequence[np.ndarray] | None = None,
    ):
        self.batches = list(batches)
        if reference_logits is None:
            session = _session(fp32_path)
            reference_logits = [_run_session(session, b) for b in self.batches]
        self.fp32_logits = list(reference_logits)
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

    def score(
        self, path: str | os.PathLike, tie_margin: float = 0.0
    ) -> tuple[float, float, float | None, float, float]:
        """(top-1 agreement with the reference outside near-ties of `tie_margin`, top-1 agreement, accuracy or
        None, mean squared and max absolute logit error) of the graph at `path`."""
        session = _session(path)
        agree = decisive = total = 0
        squared = count = largest = 0.0
        logits = []
        for batch, reference in zip(self.batches, self.fp32_logits, strict=True):
            q = _run_session(session, batch)
            logits.append(q)
            mask = predicted_positions(batch, q)
            agree += int((q.argmax(-1) == reference.argmax(-1))[mask].sum())
            decisive += int(decisive_agreement(reference, q, tie_margin)[mask].sum())
            total += int(mask.sum())
            squared += float(((q - reference) ** 2)[mask].sum())
            largest = max(largest, float(np.abs(q - reference)[mask].max(initial=0.0)))
            count += float(mask.sum()) * q.shape[-1]
        return decisive / total, agree / total, self._accuracy(logits), squared / count, largest


def quantizable_nodes(onnx_path: str | os.PathLike) -> dict[str, str]:
    """{name: op type} of the nodes of the fp32 graph that int8 quantization turns into integer ops, in graph
    order: the candidates of the sensitivity pass."""
    return {name: op for name, (op, _) in _weight_nodes(onnx_path).items()}


def bulky_nodes(onnx_path: str | os.PathLike, share: float = 0.25) -> set[str]:
    """Quantizable nodes whose weights are more than `share` of all the graph's weight elements."""
    nodes = _weight_nodes(onnx_path)
    total = sum(size for _, size in nodes.values())
    return {name for name, (_, size) in nodes.items() if size > share * total}


def _weight_nodes(onnx_path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """{name: (op type, weight elements)} of the quantizable nodes, in graph order."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    sizes = {i.name: int(np.prod(i.dims)) for i in graph.initializer}
    return {
        node.name: (node.op_type, sum(sizes.get(name, 0) for name in node.input))
        for node in graph.node
        if node.name
        and (node.op_type in MATMUL_OPS or (node.op_type in GATHER_OPS and node.input[0] in sizes))
    }


def _exclusions(nodes: Sequence[str], op_types: dict[str, str]) -> list[str]:
    """`nodes_to_exclude` for ORT: ORT's dynamic (QOperator) quantizer first rewrites each Gemm as a MatMul named
    `<gemm name>_MatMul` (+ Add) and matches the exclusions against the new name, so name both."""
    return [*nodes, *(f"{n}_MatMul" for n in nodes if op_types.get(n) == "Gemm")]


Quantize = Callable[[bool, list[str], Path], tuple[Path, "QuantizationSettings"]]
QuantizeFused = Callable[[bool, Path], tuple[Path, "QuantizationSettings"]]


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
    rank_last: Collection[str] = (),
    reference: str = "fp32 graph",
    quantize_fused: QuantizeFused | None = None,
) -> Int8Choice:
    """Run the chain described in the module docstring; return the first passing attempt.

    `quantize(per_channel, nodes_to_exclude, save_dir)` returns (path of the int8 graph, its settings), and
    `quantize_fused(per_channel, save_dir)` the same for the fused graph (None: no fused attempts);
    `candidates` are the node names the sensitivity pass may keep in fp32 (see `quantizable_nodes`), of which
    `rank_last` (see `bulky_nodes`) are tried only after the others; `reference` names what `validation` holds.

    Raises:
        ParityError: no attempt passed; the message names the best attempt's agreement and accuracy drop.
    """
    work_dir = Path(work_dir)
    choice = Int8Choice([], Path(), validation.fp32_accuracy, validation.num_samples, reference)

    def attempt(name: str, channel: bool, fp32_nodes: list[str], fused: bool = False) -> Int8Attempt:
        save_dir = work_dir / f"attempt{len(choice.attempts)}"
        if fused:
            path, settings = quantize_fused(channel, save_dir)
        else:
            path, settings = quantize(channel, fp32_nodes, save_dir)
        agreement, raw, accuracy, mse, largest = validation.score(path, gate.tie_margin)
        drop = None if accuracy is None else validation.fp32_accuracy - accuracy
        passed = gate.passes(agreement, drop)
        result = Int8Attempt(
            name, fused, channel, list(fp32_nodes), agreement, raw, accuracy, drop, mse, largest, passed
        )
        choice.attempts.append(result)
        choice.path, choice.settings = path, settings
        logger.info(f"int8 {name}: {_describe(result)}{'' if passed else ' (fails the gate)'}")
        return result

    if quantize_fused is not None:
        fused = attempt("fused per-channel" if per_channel else "fused", per_channel, [], fused=True)
        if fused.passed or not fallback:
            return _finish(choice, gate)
        if not per_channel and attempt("fused per-channel", True, [], fused=True).passed:
            return _finish(choice, gate)
    first = attempt("unfused per-channel" if per_channel else "unfused", per_channel, [])
    if first.passed or not fallback:
        return _finish(choice, gate)
    base = first
    if not per_channel:
        channel = attempt("unfused per-channel", True, [])
        if channel.passed:
            return _finish(choice, gate)
        base = min(first, channel, key=lambda a: a.logit_mse)
    if max_fp32_nodes == 0:
        return _finish(choice, gate)

    # Sensitivity: quantize all but one node at a time, on top of the better of the two attempts above.
    sensitivity = {}
    for node in candidates:
        path, _ = quantize(base.per_channel, [node], work_dir / "sensitivity")
        sensitivity[node] = validation.score(path)[3]
    choice.sensitivity = dict(sorted(sensitivity.items(), key=lambda kv: kv[1]))
    ranked = rank_sensitive(choice.sensitivity, rank_last)
    mode = "unfused per-channel" if base.per_channel else "unfused per-tensor"
    for k in range(1, min(max_fp32_nodes, len(ranked)) + 1):
        if attempt(f"{mode} + {k} fp32 node{'s' * (k > 1)}", base.per_channel, ranked[:k]).passed:
            return _finish(choice, gate)
    return _finish(choice, gate)


def rank_sensitive(sensitivity: dict[str, float], bulky: Collection[str] = ()) -> list[str]:
    """Nodes to keep in fp32, first to last: by `sensitivity` (logit error with that node alone in fp32), lowest
    first, except that a `bulky` node goes after all the others unless its error is under half of every other
    node's (it is then clearly the culprit, and worth its size)."""
    light = min((error for node, error in sensitivity.items() if node not in bulky), default=float("inf"))
    return sorted(
        sensitivity, key=lambda node: (node in bulky and 2 * sensitivity[node] >= light, sensitivity[node])
    )


def _describe(a: Int8Attempt) -> str:
    text = f"top-1 agreement {a.agreement:.2%} outside near-ties ({a.raw_agreement:.2%} with them)"
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
        f"No int8 graph keeps the predictions of the {choice.reference} on {choice.num_samples} validation inputs: "
        f"the best of {len(choice.attempts)} attempts ({best.name}) agrees on {best.agreement:.2%} of top-1 "
        f"predictions outside near-ties (min_agreement={gate.min_agreement:g}, tie_margin={gate.tie_margin:g})"
        f"{accuracy}. Raise --max_fp32_nodes, try --quantize static, or loosen --min_agreement / --max_accuracy_drop.",
        ParityReport(
            choice.num_samples,
            agreement=best.raw_agreement,
            threshold_min_agreement=gate.min_agreement,
            decisive_agreement=best.agreement,
            tie_margin=gate.tie_margin,
        ),
    )


def quantize_and_choose(
    args,
    *,
    onnx_path: Path,
    fused: FusedGraph | None,
    calibration: CalibrationTexts | None,
    work_dir: Path,
    batches: Sequence[dict[str, np.ndarray]],
    labels: Sequence[int] | None,
    fake_quantized_logits: Sequence[np.ndarray] | None = None,
) -> Int8Choice:
    """`choose_int8` with `onnxruntime.quantization` on the unfused graph `onnx_path` and the `fused` graph (None:
    no fused attempts); candidates are written under `work_dir`. `args` is the export's `ExportArguments` (preset,
    quantize mode, per_channel, gate, chain); `calibration` feeds static quantization.

    A quantization-aware student (`fake_quantized_logits`: its fake-quantized logits on `batches`, the chain's
    reference) is quantized as it was trained: per-channel weights, attention's activation products in fp32
    (`qat_nodes_to_exclude`)."""
    quantization_aware = fake_quantized_logits is not None
    is_static = args.quantize == "static"
    candidates = quantizable_nodes(onnx_path)
    always = qat_nodes_to_exclude(onnx_path) if quantization_aware else []
    candidates = {n: op for n, op in candidates.items() if n not in always}

    def quantize(
        per_channel: bool, nodes_to_exclude: list[str], save_dir: Path
    ) -> tuple[Path, QuantizationSettings]:
        excluded = always + _exclusions(nodes_to_exclude, candidates)
        settings = QuantizationSettings.for_preset(
            args.preset, is_static, per_channel, excluded, args.calibration_method
        )
        return quantize_graph(onnx_path, save_dir / QUANTIZED_FILE, settings, calibration), settings

    def quantize_fused(per_channel: bool, save_dir: Path) -> tuple[Path, QuantizationSettings]:
        settings = QuantizationSettings.for_preset(args.preset, False, per_channel)
        return quantize_graph(fused.path, save_dir / QUANTIZED_FILE, settings), settings

    choice = choose_int8(
        quantize,
        ValidationSet(onnx_path, batches, labels, fake_quantized_logits),
        Int8Gate(args.min_agreement, args.max_accuracy_drop, args.tie_margin),
        candidates=list(candidates),
        work_dir=work_dir,
        per_channel=args.per_channel or quantization_aware,
        fallback=args.fallback,
        max_fp32_nodes=args.max_fp32_nodes,
        rank_last=bulky_nodes(onnx_path),
        reference="fake-quantized student" if quantization_aware else "fp32 graph",
        quantize_fused=quantize_fused if fused is not None else None,
    )
    choice.fused_ops = fused.ops if fused is not None else None
    return choice
