"""The int8 fallback chain of `export_model`: per-channel weights, then sensitive nodes in fp32, on tiny BERT models
built so that the default dynamic int8 graph breaks them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest
import torch
from tiny import EXPORT_WORDS, save_wordpiece_model
from transformers import AutoTokenizer, BertForSequenceClassification

from distilnlp.onnx import ParityError, export_model

TEXTS = [
    " ".join(EXPORT_WORDS[(7 * i + 13 * j) % len(EXPORT_WORDS)] for j in range(3 + i % 20)) for i in range(64)
]
INTEGER_OPS = {"MatMulInteger", "DynamicQuantizeLinear"}


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
    result = export_model(model_dir, tmp_path / "onnx", parity_texts=TEXTS, parity_labels=labels, **GATE)
    default, chosen = result.int8_choice.attempts
    assert default.name == "default" and not default.passed and default.agreement < 0.6
    assert default.accuracy_drop == pytest.approx(1 - default.accuracy) and default.accuracy < 0.6
    assert chosen.name == "per-channel" and chosen.passed and chosen.fp32_nodes == []
    assert result.parity["int8"].agreement == pytest.approx(chosen.agreement)

    summary = json.loads(result.summary_path.read_text())["int8_choice"]
    assert summary["chosen"] == "per-channel" and summary["per_channel"] is True
    assert summary["fp32_accuracy"] == 1.0 and summary["sensitivity"] is None
    assert [a["passed"] for a in summary["attempts"]] == [False, True]
    ort_config = json.loads((result.output_dir / "ort_config.json").read_text())
    assert ort_config["quantization"]["per_channel"] is True
    # Every MatMul is integer: 2 layers x (4 projections + 2 attention products + 2 FFN) + pooler + classifier.
    assert integer_ops(result.quantized_path)["MatMulInteger"] == 18
    assert not list(result.output_dir.glob("tmp*"))  # the candidates' scratch folder is gone


@pytest.mark.slow  # a sensitivity pass: 20 quantizations
def test_activation_outlier_keeps_the_sensitive_matmul_in_fp32(tmp_path):
    model_dir, labels = crafted_model(tmp_path / "model", "activation")
    result = export_model(model_dir, tmp_path / "onnx", parity_texts=TEXTS, parity_labels=labels, **GATE)
    choice = result.int8_choice
    names = [a.name for a in choice.attempts]
    assert names == ["default", "per-channel", "per-channel + 1 fp32 node"]
    assert not choice.attempts[0].passed and not choice.attempts[1].passed
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
    assert summary["fp32_nodes"] == [culprit] and summary["chosen"] == "per-channel + 1 fp32 node"
    ort_config = json.loads((result.output_dir / "ort_config.json").read_text())
    assert culprit in ort_config["quantization"]["nodes_to_exclude"]


def test_failed_chain_names_the_accuracy_drop(tmp_path):
    model_dir, labels = crafted_model(tmp_path / "model", "activation")
    with pytest.raises(
        ParityError, match=r"loses \d+\.\d\d accuracy points \(100\.00% -> .*max_accuracy_drop=0.02"
    ):
        export_model(
            model_dir, tmp_path / "onnx", parity_texts=TEXTS, parity_labels=labels, fallback=False, **GATE
        )
    # Without labels, the same failure is named by its agreement alone.
    with pytest.raises(
        ParityError, match=r"agrees on \d+\.\d\d% of top-1 predictions \(min_agreement=0.97\)\. "
    ):
        export_model(model_dir, tmp_path / "onnx2", parity_texts=TEXTS, max_fp32_nodes=0, **GATE)
