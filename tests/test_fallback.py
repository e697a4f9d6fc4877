"""The int8 fallback chain of `export_model`: per-channel weights, then sensitive nodes in fp32, on tiny BERT models
built so that the default dynamic int8 graph breaks them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny import EXPORT_WORDS, export, save_wordpiece_model
from transformers import AutoTokenizer, BertForSequenceClassification

from distilnlp.onnx import ParityError
from distilnlp.onnx.fallback import bulky_nodes, quantizable_nodes, rank_sensitive
from distilnlp.onnx.parity import decisive_agreement

TEXTS = [
    " ".join(EXPORT_WORDS[(7 * i + 13 * j) % len(EXPORT_WORDS)] for j in range(3 + i % 20)) for i in range(64)
]
INTEGER_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QAttention"}


def crafted_model(path: Path, outlier: str) -> tuple[Path, list[int]]:
    """A 2-layer tiny BERT whose fp32 predictions are untouched by an outlier that per-tensor int8 cannot carry;
    returns the folder and the fp32 predictions on TEXTS (used as labels, so fp32 accuracy is 1).

    - "weight": one output unit of the pooler's weight matrix is scaled by 1000 (tanh saturates it; the classifier
      reads it with weight 0). One per-tensor scale for the whole matrix rounds every other weight to 0; per-channel
      scales do not.
    - "activation": unit 7 of layer 0's FFN gets bias 500 (its output-dense weights for that unit are 0). The
      per-tensor dynamic scale of the activation entering layer 0's output MatMul then rounds every other unit to
      0, whatever the weight scales: only keeping that MatMul in fp32 helps.
    """
    save_wordpiece_model(path)
    model = BertForSequenceClassification.from_pretrained(path).eval()
    encoded = AutoTokenizer.from_pretrained(path)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        if outlier == "weight":
            model.bert.pooler.dense.weight[5] *= 1000
            model.classifier.weight[:, 5] = 0
        else:
            model.bert.encoder.layer[0].intermediate.dense.bias[7] = 500.0
            model.bert.encoder.layer[0].output.dense.weight[:, 7] = 0
        # Centre the logits so that the three classes are all predicted: a constant int8 output then scores ~1/3.
        model.classifier.bias -= model(**encoded).logits.mean(0)
        labels = model(**encoded).logits.argmax(-1).tolist()
    model.save_pretrained(path)
    assert min(Counter(labels).values()) >= 10
    return path, labels


def integer_ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in INTEGER_OPS)


# One flip in 64 is allowed (a random model has near ties); a broken graph flips about two in three.
GATE = {"min_agreement": 0.97, "max_accuracy_drop": 0.02}


def test_weight_outlier_falls_back_to_per_channel(tmp_path):
    model_dir, labels = crafted_model(tmp_path / "model", "weight")
    result = export(
        model_dir, tmp_path / "onnx", parity_texts=TEXTS, parity_labels=labels, per_channel=False, **GATE
    )
    default, chosen = result.int8_choice.attempts
    assert default.name == "fused" and not default.passed and default.agreement < 0.6
    assert default.accuracy_drop == pytest.approx(1 - default.accuracy) and default.accuracy < 0.6
    assert chosen.name == "fused per-channel" and chosen.passed and chosen.fp32_nodes == []
    assert result.parity["int8"].decisive_agreement == pytest.approx(chosen.agreement)
    assert result.parity["int8"].agreement == pytest.approx(chosen.raw_agreement)
    assert chosen.raw_agreement <= chosen.agreement  # near-ties can only be forgiven

    summary = json.loads(result.summary_path.read_text())["int8_choice"]
    assert summary["chosen"] == "fused per-channel" and summary["per_channel"] is True and summary["fused"]
    assert summary["fp32_accuracy"] == 1.0 and summary["sensitivity"] is None
    assert summary["fused_ops"] == {
        "Attention": 2,
        "EmbedLayerNormalization": 1,
        "SkipLayerNormalization": 4,
        "BiasGelu": 2,
    }
    assert [a["passed"] for a in summary["attempts"]] == [False, True]
    assert (
        summary["quantization"]["per_channel"] is True and summary["quantization"]["nodes_to_exclude"] == []
    )
    # Every weight matmul is integer: per layer one QAttention (Q, K, V in one int8 matmul) and 3 MatMulInteger
    # (attention output, FFN in and out), then pooler and classifier.
    ops = integer_ops(result.quantized_path)
    assert ops["QAttention"] == 2 and ops["MatMulInteger"] == 2 * 3 + 2
    assert not list(result.output_dir.glob("tmp*"))  # the candidates' scratch folder is gone


@pytest.mark.slow  # a sensitivity pass: 20 quantizations
def test_activation_outlier_keeps_the_sensitive_matmul_in_fp32(tmp_path):
    model_dir, labels = crafted_model(tmp_path / "model", "activation")
    result = export(model_dir, tmp_path / "onnx", parity_texts=TEXTS, parity_labels=labels, **GATE)
    choice = result.int8_choice
    names = [a.name for a in choice.attempts]
    # The fused graph first (no node can be kept in fp32 there), then the unfused chain; weights per-channel by
    # default.
    assert names == ["fused per-channel", "unfused per-channel", "unfused per-channel + 1 fp32 node"]
    assert not any(a.passed for a in choice.attempts[:-1])
    culprit = "/bert/encoder/layer.0/output/dense/MatMul"
    # The sensitivity pass ranks the culprit first, far ahead of the rest.
    ranked = list(choice.sensitivity.items())
    assert ranked[0][0] == culprit and ranked[0][1] * 10 < ranked[1][1]
    assert choice.chosen.fp32_nodes == [culprit] and choice.chosen.passed

    graph = onnx.load(str(result.quantized_path)).graph
    kept = [n for n in graph.node if n.name == culprit]
    assert [n.op_type for n in kept] == ["MatMul"]  # the culprit runs in fp32 ...
    assert integer_ops(result.quantized_path)["MatMulInteger"] == 17  # ... the 17 other MatMuls in int8
    summary = json.loads(result.summary_path.read_text())["int8_choice"]
    assert summary["fp32_nodes"] == [culprit] and summary["chosen"] == "unfused per-channel + 1 fp32 node"
    assert summary["fused"] is False
    assert culprit in summary["quantization"]["nodes_to_exclude"]


def test_failed_chain_names_the_accuracy_drop(tmp_path):
    model_dir, labels = crafted_model(tmp_path / "model", "activation")
    with pytest.raises(
        ParityError, match=r"loses \d+\.\d\d accuracy points \(100\.00% -> .*max_accuracy_drop=0.02"
    ):
        export(model_dir, tmp_path / "onnx", parity_texts=TEXTS, parity_labels=labels, fallback=False, **GATE)
    # Without labels, the same failure is named by its agreement alone.
    with pytest.raises(
        ParityError,
        match=r"agrees on \d+\.\d\d% of top-1 predictions outside near-ties \(min_agreement=0.97, tie_margin=0.1\)\. ",
    ):
        export(model_dir, tmp_path / "onnx2", parity_texts=TEXTS, max_fp32_nodes=0, **GATE)


def test_a_bulky_node_is_kept_in_fp32_only_when_it_is_clearly_the_culprit():
    # Sensitivities (logit MSE x 1e3) of the 1-layer BBC sentences student: the word-embedding Gather is second
    # by noise-level error, so it goes after the light nodes; one 10x below the rest is kept first.
    measured = {"ffn": 1.156, "word_embeddings": 1.285, "position_embeddings": 1.365, "value": 1.47}
    assert rank_sensitive(measured, {"word_embeddings"}) == [
        "ffn",
        "position_embeddings",
        "value",
        "word_embeddings",
    ]
    culprit = measured | {"word_embeddings": 0.1}
    assert rank_sensitive(culprit, {"word_embeddings"})[0] == "word_embeddings"
    assert rank_sensitive(measured) == sorted(measured, key=measured.get)  # no bulky node: error order


def test_bulky_nodes_are_the_ones_holding_over_a_quarter_of_the_weights(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.zeros((1000, 8), np.float32), "table")  # 8,000 of 8,064 weights
    weight = numpy_helper.from_array(np.zeros((8, 8), np.float32), "weight")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["embedded"], name="embeddings"),
            helper.make_node("MatMul", ["embedded", "weight"], ["out"], name="dense"),
            helper.make_node("Shape", ["out"], ["shape"], name="shape"),
            helper.make_node(
                "Gather", ["shape", "zero"], ["first"], name="shape_gather"
            ),  # no weight: not a node
        ],
        "g",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("zero", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("first", TensorProto.INT64, [])],
        initializer=[table, weight],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert quantizable_nodes(path) == {"embeddings": "Gather", "dense": "MatMul"}
    assert bulky_nodes(path) == {"embeddings"}
    assert bulky_nodes(path, share=0.999) == set()


def test_flips_between_near_tied_classes_are_not_counted_against_agreement():
    # Reference probabilities: [0.46, 0.44, 0.10] (a near-tie), [0.80, 0.15, 0.05] (decisive).
    reference = np.log(np.array([[0.46, 0.44, 0.10], [0.80, 0.15, 0.05]]))
    flip_to_second = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # int8 picks class 1 on both
    assert decisive_agreement(reference, flip_to_second, 0.1).tolist() == [
        True,
        False,
    ]  # 0.02 <= 0.1; 0.65 > 0.1
    assert decisive_agreement(reference, flip_to_second, 0.0).tolist() == [False, False]  # every flip counts
    assert decisive_agreement(reference, reference, 0.0).tolist() == [True, True]
    # A flip to the near-tied class's far neighbour counts: 0.46 - 0.10 = 0.36 > 0.1.
    assert decisive_agreement(reference[:1], np.array([[0.0, 0.0, 1.0]]), 0.1).tolist() == [False]
