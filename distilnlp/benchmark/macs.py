"""Multiply-accumulates of an exported encoder: counted from the ONNX graph, and analytically from a BERT config.

    matmul_macs("runs/onnx/model_quantized.onnx", batch=1, sequence_length=128)
    # {"total": ..., "int8": ..., "by_op": {"MatMulInteger": ..., "MatMul": ...}, "nodes": ...}

The graph count runs the graph once on synthetic inputs of the given shape with the inputs of every matmul-like
node (MatMul, MatMulInteger, Gemm, QLinearMatMul, MatMulIntegerToFloat, DynamicQuantizeMatMul) exposed as extra
outputs, so shapes come from ONNX Runtime itself rather than from shape inference (which cannot follow the
Shape -> Gather -> Concat -> Reshape chains of an exported attention block). It therefore counts exactly what
the graph computes, attention's score (Q K^T) and context (P V) products included. ONNX Runtime's fused
`Attention` / `QAttention` (the fused int8 graph) count their Q, K, V projection, (B, S, H) x (H, 3H), plus the
two products inside, 2 B S^2 H; in `QAttention` the projection is int8 and the products fp32.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

# op type -> (index of A, index of B) among its inputs.
MATMUL_OPS = {
    "MatMul": (0, 1),
    "MatMulInteger": (0, 1),
    "Gemm": (0, 1),
    "QLinearMatMul": (0, 3),  # a, a_scale, a_zero_point, b, ...
    "MatMulIntegerToFloat": (0, 1),
    "DynamicQuantizeMatMul": (0, 1),
}
# Fused attention: input (B, S, H) and packed Q, K, V weight (H, 3H).
ATTENTION_OPS = {"Attention": (0, 1), "QAttention": (0, 1)}
INT8_OPS = {"MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention"}
ATTENTION_PRODUCTS = "attention products (in fused attention)"  # fp32 in both fused ops


def matmul_node_macs(op_type: str, a_shape, b_shape, attributes: dict | None = None) -> int:
    """MACs of one matmul-like node from its input shapes: A (..., M, K) x B (..., K, N) -> prod(batch) * M * K * N,
    with numpy broadcasting of the batch dims; Gemm's transA / transB respected."""
    a, b = list(a_shape), list(b_shape)
    if op_type == "Gemm":
        attributes = attributes or {}
        m, k = (a[1], a[0]) if attributes.get("transA") else (a[0], a[1])
        n = b[0] if attributes.get("transB") else b[1]
        return int(m) * int(k) * int(n)
    if len(a) == 1:
        a = [1, *a]
    if len(b) == 1:
        b = [*b, 1]
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return int(np.prod(batch, dtype=np.int64)) * int(a[-2]) * int(a[-1]) * int(b[-1])


def synthetic_inputs(session, batch: int, sequence_length: int) -> dict[str, np.ndarray]:
    """Token ids 5.. (any real token), an all-ones attention mask, zero token types: work does not depend on them."""
    feeds = {}
    for graph_input in session.get_inputs():
        shape = (batch, sequence_length)
        if graph_input.name == "attention_mask":
            feeds[graph_input.name] = np.ones(shape, dtype=np.int64)
        elif graph_input.name == "input_ids":
            feeds[graph_input.name] = (
                (5 + np.arange(batch * sequence_length) % 50).reshape(shape).astype(np.int64)
            )
        else:
            feeds[graph_input.name] = np.zeros(shape, dtype=np.int64)
    return feeds


def matmul_macs(onnx_path: str | os.PathLike, batch: int, sequence_length: int) -> dict:
    """{"total", "int8", "by_op": {op: MACs}, "nodes"} of the graph at `onnx_path` for inputs (batch, sequence_length).

    "int8" counts the nodes whose operands are 8-bit (MatMulInteger and friends); the rest (attention's activation
    products when they stay fp32, an unquantized classifier) run in fp32.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    graph = model.graph
    constants = {init.name: list(init.dims) for init in graph.initializer}
    operands = MATMUL_OPS | ATTENTION_OPS
    nodes = [n for n in graph.node if n.op_type in operands]
    dynamic = []  # operand names whose shape is known only at run time
    for node in nodes:
        for index in operands[node.op_type]:
            name = node.input[index]
            if name not in constants and name not in dynamic:
                dynamic.append(name)
    existing = {o.name for o in graph.output}
    # Extra outputs need a type: take it from shape inference where it knows, else float (the common case).
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    for name in dynamic:
        if name not in existing:
            graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name, 1), None))
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )  # keep every node as written
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(dynamic, synthetic_inputs(session, batch, sequence_length)) if dynamic else []
    shapes = dict(constants) | {name: list(v.shape) for name, v in zip(dynamic, values, strict=True)}

    by_op: dict[str, int] = defaultdict(int)
    for node in nodes:
        ia, ib = operands[node.op_type]
        a, b = shapes[node.input[ia]], shapes[node.input[ib]]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ATTENTION_OPS:  # projection (B, S, H) x (H, 3H), then S x S scores and context
            by_op[node.op_type] += matmul_node_macs("MatMul", a, b)
            batch, length, hidden = a
            by_op[ATTENTION_PRODUCTS] += 2 * batch * length * length * hidden
            continue
        by_op[node.op_type] += matmul_node_macs(node.op_type, a, b, attributes)
    return {
        "total": sum(by_op.values()),
        "int8": sum(v for op, v in by_op.items() if op in INT8_OPS),
        "by_op": dict(by_op),
        "nodes": len(nodes),
    }


def bert_macs(config, batch: int, sequence_length: int) -> int:
    """MACs of a BERT-style sequence classifier from its config, for inputs (batch, sequence_length) = (B, S).

    Per layer and sequence: Q, K, V and output projections 4 S H^2; feed-forward 2 S H I; attention scores Q K^T
    and context P V 2 S^2 H (summed over heads: S x S x head_dim each). Then the pooler H^2 and the classifier
    H x num_labels on the first token. Embeddings are lookups (no MACs); softmax, LayerNorm, GELU are not MACs.
    """
    h, i, s = config.hidden_size, config.intermediate_size, sequence_length
    per_layer = 4 * s * h * h + 2 * s * h * i + 2 * s * s * h
    head = h * h + h * config.num_labels
    return batch * (config.num_hidden_layers * per_layer + head)
