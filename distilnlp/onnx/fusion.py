"""The fused fp32 graph whose int8 quantization is ONNX Runtime's fastest CPU graph for a BERT-class model.

    fused = fuse_graph("model.onnx", config, "work/fused.onnx")   # FusedGraph(path, ops={...}, complete=True)

`onnxruntime.transformers.optimizer.optimize_model` turns each layer's attention subgraph into one `Attention` op,
residual + LayerNorm into `SkipLayerNormalization`, bias + GELU into `BiasGelu` and the embeddings into
`EmbedLayerNormalization`. Dynamic int8 quantization then makes `QAttention` (one int8 matmul for Q, K and V) and
`MatMulInteger`. The fused-operator counts are read back (`get_fused_operator_statistics`), so a graph whose
attention did not fuse is reported, never shipped as "fused".

ORT's quantizer cannot type the outputs of fused contrib ops by itself ("Unable to find data type for
weight_name"), so the fused graph is annotated by ORT's symbolic shape inference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from transformers import PretrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The fused ops worth counting; the statistics hold more kinds, mostly zero.
FUSED_OPS = ("Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu")
# config.model_type -> the model type of ORT's fusion rules (their BERT rules cover the BERT-like encoders).
ORT_MODEL_TYPES = {
    name: "bert"
    for name in (
        "bert",
        "roberta",
        "xlm-roberta",
        "camembert",
        "distilbert",
        "electra",
        "deberta-v2",
        "mpnet",
        "albert",
    )
}


@dataclass
class FusedGraph:
    path: Path
    ops: dict[str, int]  # fused op type -> count
    num_layers: int

    @property
    def complete(self) -> bool:
        """Every layer's attention fused (the graph the int8 chain wants)."""
        return self.ops.get("Attention", 0) == self.num_layers

    def describe(self) -> str:
        return ", ".join(f"{count} {op}" for op, count in self.ops.items() if count) or "no fused ops"


def fuse_graph(
    onnx_path: str | os.PathLike,
    config: PretrainedConfig,
    target: str | os.PathLike,
    opt_level: int = 0,
    embed_layer_norm: bool = True,
) -> FusedGraph | None:
    """Fuse `onnx_path` with ORT's transformer fusions for `config`'s architecture, typed for quantization, into
    `target`. None, with the reason logged, where ORT has no fusion rules for the architecture or fusion fails.

    `opt_level` 0 applies the transformer fusions only (a graph any ORT build runs); 1 and 2 run ORT's basic /
    extended graph optimizations first. `embed_layer_norm=False` leaves the embeddings unfused: a quantization-aware
    student needs that, since QEmbedLayerNormalization also rounds the LayerNorm's gamma and beta, which its
    training does not emulate.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = ORT_MODEL_TYPES.get(config.model_type)
    if model_type is None:
        logger.warning(f"ONNX Runtime has no transformer fusions for {config.model_type!r}; no fused graph.")
        return None
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    options = FusionOptions(model_type)
    options.enable_embed_layer_norm = embed_layer_norm
    try:
        optimizer = optimize_model(
            str(onnx_path),
            model_type=model_type,
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=opt_level,
            optimization_options=options,
        )
        statistics = optimizer.get_fused_operator_statistics()
        optimizer.save_model_to_file(str(target))  # declares the com.microsoft domain of the fused ops
        onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(target)), auto_merge=True), str(target))
    except Exception as error:  # noqa: BLE001 - the fused graph is an optimization; the unfused graph remains
        logger.warning(f"No fused graph ({type(error).__name__}: {str(error)[:200]}).")
        return None
    counts = {op: int(statistics.get(op, 0)) for op in FUSED_OPS}
    fused = FusedGraph(target, {op: n for op, n in counts.items() if n}, config.num_hidden_layers)
    if not fused.complete:
        logger.warning(
            f"ONNX Runtime fused attention in {fused.ops.get('Attention', 0)} of {fused.num_layers} layers "
            f"({fused.describe()})."
        )
    return fused


def optimized_graph(
    onnx_path: str | os.PathLike, config: PretrainedConfig, target: str | os.PathLike, level: int
) -> Path:
    """The fp32 graph at `level` (see `ExportArguments.optimize`) written to `target`: 0 as exported, 1 ORT's basic
    graph optimizations, 2 ORT's transformer fusions (`fuse_graph`; the basic ones where it has none)."""
    import shutil

    from onnxruntime.transformers.optimizer import optimize_model

    target = Path(target)
    if level == 0:
        return Path(shutil.copyfile(onnx_path, target))
    if level == 2:
        fused = fuse_graph(onnx_path, config, target)
        if fused is not None:
            return target
    model_type = ORT_MODEL_TYPES.get(config.model_type, "bert")
    optimize_model(
        str(onnx_path), model_type=model_type, opt_level=1, only_onnxruntime=True
    ).save_model_to_file(str(target))
    return target
