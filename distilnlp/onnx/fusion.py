"""The fused fp32 graph whose int8 quantization is ONNX Runtime's fastest CPU graph for a BERT-class model.

    fused = fused_graph(export_dir, work_dir)   # FusedGraph(path=work_dir/model.onnx, ops={...}) or None

ORT's transformer fusions (Optimum's `ORTOptimizer` at O2) turn each layer's attention subgraph into one
`Attention` op, residual + LayerNorm into `SkipLayerNormalization` and bias + GELU into `BiasGelu`. Dynamic int8
quantization then makes `QAttention` (one int8 matmul for Q, K and V) and `MatMulInteger`: on the 1-layer
MiniLM student at 128 tokens, 1.06x (batch 1) and 1.08x (batch 32) faster than the fully int8 unfused graph
(`benchmarks/results/int8_peak_fused_2threads.md`).

ORT's quantizer cannot type the outputs of fused contrib ops by itself ("Unable to find data type for
weight_name"), so the fused graph is annotated by ORT's symbolic shape inference first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging

from ..artifacts import ONNX_FILE, OPTIMIZED_FILE
from .quantize import _optimization_config

logger = logging.get_logger(__name__)

FUSED_OPS = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "FastGelu")


@dataclass
class FusedGraph:
    path: Path  # `work_dir / model.onnx`, next to its config.json: ready for `ORTQuantizer.from_pretrained`
    ops: dict[str, int]  # fused op type -> count


def fused_graph(export_dir: Path, work_dir: Path) -> FusedGraph | None:
    """Fuse `export_dir / model.onnx` (an Optimum export, config.json beside it) into `work_dir`; None, with the
    reason logged, when ORT has no fusions for the architecture or none of them applied (no `Attention`)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from optimum.onnxruntime import ORTOptimizer

    try:
        optimizer = ORTOptimizer.from_pretrained(export_dir, file_names=[ONNX_FILE])
        optimizer.optimize(_optimization_config(2), save_dir=work_dir)
        fused = onnx.load(str(work_dir / OPTIMIZED_FILE))
        typed = SymbolicShapeInference.infer_shapes(fused, auto_merge=True)
    except Exception as error:  # noqa: BLE001 - the fused graph is an optimization; the unfused chain remains
        logger.warning(
            f"No fused int8 graph ({type(error).__name__}: {str(error)[:200]}); using the unfused one."
        )
        return None
    ops = Counter(node.op_type for node in typed.graph.node if node.op_type in FUSED_OPS)
    if not ops["Attention"]:
        logger.warning("ONNX Runtime fused no attention in this graph; using the unfused int8 graph.")
        return None
    (work_dir / OPTIMIZED_FILE).unlink()
    onnx.save(typed, str(work_dir / ONNX_FILE))
    return FusedGraph(work_dir / ONNX_FILE, dict(ops))
