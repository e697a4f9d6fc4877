"""Quantization-aware distillation: fake quantization that rounds like ONNX Runtime, training through it, and the
int8 export checked against the fake-quantized student."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from datasets import Dataset
from tiny import EXPORT_WORDS, export, quick_distillation_args, save_wordpiece_model
from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

from distilnlp import DistillationTrainer
from distilnlp.int8.quantization_aware import (
    WEIGHT_GRIDS,
    FakeQuantLinear,
    fake_quant_activation,
    fake_quant_table,
    fake_quant_weight,
    fake_quantized_logits,
    ort_quantizer_settings,
)
from distilnlp.onnx.quantize import PRESETS

TEXTS = [
    " ".join(EXPORT_WORDS[(7 * i + 13 * j) % len(EXPORT_WORDS)] for j in range(3 + i % 20)) for i in range(48)
]


def ort_dynamic_round_trip(x: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear -> DequantizeLinear in ONNX Runtime (what MatMulInteger's input sees)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_fake_quantization_rounds_like_onnx_runtime():
    torch.manual_seed(0)
    for x in (torch.randn(4, 7, 16) * 3 + 1, torch.rand(5, 9) + 0.5, -torch.rand(3, 8)):
        np.testing.assert_array_equal(fake_quant_activation(x).numpy(), ort_dynamic_round_trip(x.numpy()))
    w = torch.randn(6, 10)
    q = fake_quant_weight(w)
    steps = q / (w.abs().amax(1, keepdim=True) / 127)
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)  # on each row's int8 grid
    assert (q.abs().amax(1) - w.abs().amax(1)).abs().max() < 1e-6  # the row maximum is exact
    # Straight-through: rounding passes gradients unchanged.
    w.requires_grad_(True)
    fake_quant_weight(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))


@pytest.mark.parametrize("preset", sorted(WEIGHT_GRIDS))
def test_weight_and_table_grids_are_onnx_runtimes(preset, tmp_path):
    """The quantizer settings of each preset round a MatMul weight (per channel) and an embedding table (a Gather:
    uint8, asymmetric unless the weights are uint8 too) exactly as the emulation does."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    table = (rng.standard_normal((20, 8)) * 0.3 + 0.05).astype(np.float32)
    weight = (rng.standard_normal((8, 6)) * 0.2).astype(np.float32)  # ONNX MatMul: (in, out)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 6])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fp32.onnx")
    settings = ort_quantizer_settings(preset)
    quantize_dynamic(
        tmp_path / "fp32.onnx",
        tmp_path / "int8.onnx",
        per_channel=settings["per_channel"],
        reduce_range=settings["reduce_range"],
        weight_type=getattr(QuantType, settings["weight_type"]),
        extra_options=settings["extra_options"],
    )
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "int8.onnx").graph.initializer}

    def dequantized(name):
        q, zero_point = (
            inits[f"{name}_quantized"].astype(np.float32),
            inits[f"{name}_zero_point"].astype(np.float32),
        )
        return (q - zero_point) * inits[f"{name}_scale"]

    grid = WEIGHT_GRIDS[preset]
    np.testing.assert_array_equal(
        dequantized("table"), fake_quant_table(torch.from_numpy(table), grid).numpy()
    )
    np.testing.assert_array_equal(
        dequantized("w"), fake_quant_weight(torch.from_numpy(weight.T.copy()), grid=grid).numpy().T
    )
    assert inits["table_quantized"].dtype == np.uint8
    if grid == "int7":  # VPMADDUBSW (uint8 x int8 without VNNI) cannot saturate: 2 * 255 * 64 < 2**15
        assert np.abs(inits["w_quantized"]).max() <= 64


@pytest.mark.slow  # distils, then exports
def test_quantization_aware_distillation_trains_and_exports(tmp_path):
    teacher_dir = save_wordpiece_model(tmp_path / "teacher", layers=2)
    student_dir = save_wordpiece_model(tmp_path / "student", layers=1, seed=1)
    teacher = BertForSequenceClassification.from_pretrained(teacher_dir).eval()
    student = BertForSequenceClassification.from_pretrained(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    with torch.no_grad():
        labels = teacher(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    data = Dataset.from_dict({"text": TEXTS, "label": labels}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )
    before = student.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=quick_distillation_args(tmp_path, quantization_aware=True, max_steps=6, learning_rate=1e-2),
        train_dataset=data,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    linears = [m for m in student.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is FakeQuantLinear for m in linears)
    history = trainer.train()
    assert np.isfinite(history.training_loss)
    assert not torch.equal(
        student.bert.encoder.layer[0].intermediate.dense.weight, before
    )  # gradients got through
    trainer.save_model(tmp_path / "qat")
    config = json.loads((tmp_path / "qat" / "config.json").read_text())
    assert config["distilnlp_quantization_aware"] in PRESETS

    result = export(tmp_path / "qat", tmp_path / "onnx", parity_texts=TEXTS)  # default gate
    choice = json.loads(result.summary_path.read_text())["int8_choice"]
    assert choice["per_channel"] is True and choice["reference"] == "fake-quantized student"
    # The int8 graph computes what the fake-quantized student computes: the chain's first attempt passes.
    [chosen] = choice["attempts"]
    assert chosen["agreement"] == 1.0 and chosen["fp32_nodes"] == []
    # The int8 graph computes what the fake-quantized student computes: its integer products are exact and its
    # rounding grids are the emulation's, so a row agrees to float precision (~2e-7) unless an activation lands
    # within float noise (~1e-6) of a rounding boundary and rounds the other way in one of the two, moving that
    # sequence by one quantization step (up to the size of the int8 error itself). Such flips are rare and touch one
    # row each: most rows reproduce, while the int8 graph is ~0.02 away from the fp32 one.
    import onnxruntime as ort

    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    runs = []
    for path in (result.onnx_path, result.quantized_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        runs.append(session.run(None, {name: enc[name].astype(np.int64) for name in names})[0])
    reference = BertForSequenceClassification.from_pretrained(tmp_path / "qat", attn_implementation="eager")
    [fake_quantized] = fake_quantized_logits(reference, [dict(enc)], names)
    row_error = np.abs(runs[1] - fake_quantized).max(-1)
    assert float((row_error <= 1e-4).mean()) >= 0.9, row_error
    assert float(np.abs(runs[0] - runs[1]).max()) > 0.01
    ops = Counter(n.op_type for n in onnx.load(str(result.quantized_path)).graph.node)
    # The fused graph: Q, K and V in one QAttention (its attention products in fp32, as in training), then the
    # attention output, FFN in and out, pooler and classifier as MatMulInteger; no fp32 MatMul left.
    assert chosen["fused"] and result.int8_choice.fused_ops["Attention"] == 1
    assert ops["QAttention"] == 1 and ops["MatMulInteger"] == 5 and ops["MatMul"] == 0, ops

    # Unfused (standard ONNX ops): 6 Linear layers + pooler + classifier in int8 (Q, K, V share one input
    # quantization); the two attention products stay fp32, as in training. Same fake-quantized reference.
    unfused = export(tmp_path / "qat", tmp_path / "unfused", parity_texts=TEXTS, fuse=False)
    [attempt] = unfused.int8_choice.attempts
    assert attempt.name == "unfused per-channel" and attempt.agreement == 1.0
    ops = Counter(n.op_type for n in onnx.load(str(unfused.quantized_path)).graph.node)
    assert ops["MatMulInteger"] == 8 and ops["DynamicQuantizeLinear"] == 6 and ops["MatMul"] == 2
    assert ops["QAttention"] == 0 and unfused.int8_choice.fused_ops is None
