"""ONNX export, optimization, int8 quantization and parity checks on tiny random BERT models."""

from __future__ import annotations

import inspect
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny import EXPORT_WORDS, export, save_wordpiece_model
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    BertForTokenClassification,
    HfArgumentParser,
    pipeline,
)

from distilnlp.onnx import ExportArguments, OnnxClassifier, ParityError, check_parity, export_model
from distilnlp.onnx.quantize import PRESETS

WORDS = EXPORT_WORDS
TEXTS = [" ".join(WORDS[(7 * i + 13 * j) % len(WORDS)] for j in range(3 + i % 20)) for i in range(40)]
INTEGER_OPS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear", "QuantizeLinear", "QAttention"}


def op_types(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def torch_logits(model_dir: Path, texts: list[str], token: bool) -> tuple[np.ndarray, dict]:
    cls = BertForTokenClassification if token else BertForSequenceClassification
    model = cls.from_pretrained(model_dir).eval()
    enc = AutoTokenizer.from_pretrained(model_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy(), enc


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory) -> Path:
    return save_wordpiece_model(tmp_path_factory.mktemp("seq") / "model")


@pytest.fixture(scope="module")
def seq_export(seq_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq_onnx")
    # A random model has near-tied logits; int8 may flip one of 40 (a real student is far from ties).
    return export(seq_dir, out, optimize=2, quantize="dynamic", parity_texts=TEXTS, min_agreement=0.95)


def test_sequence_classification_round_trip(seq_dir, seq_export):
    out = seq_export.output_dir
    assert seq_export.onnx_path == out / "model.onnx"
    assert seq_export.optimized_path == out / "model_optimized.onnx"
    assert seq_export.quantized_path == out / "model_quantized.onnx"
    for name in ("fp32", "optimized"):  # vs PyTorch; the int8 report's is int8 vs fp32, ungated
        assert seq_export.parity[name].max_abs_diff <= 1e-4
    assert seq_export.parity["int8"].agreement >= 0.95

    # Independent of check_parity: the saved folder loads in the runtime class and reproduces PyTorch.
    expected, enc = torch_logits(seq_dir, TEXTS[:8], token=False)
    for file_name in ("model.onnx", "model_optimized.onnx"):
        classifier = OnnxClassifier.from_pretrained(out, file_name=file_name)
        logits = classifier.logits({k: v.numpy() for k, v in enc.items()})
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 0.05  # the logits are not all ~0, so the tolerance means something

    # The runtime class answers like transformers.pipeline("text-classification") on the same model.
    classifier = OnnxClassifier.from_pretrained(out, file_name="model.onnx")
    reference = pipeline("text-classification", model=str(seq_dir), tokenizer=str(seq_dir))
    for got, want in zip(classifier(TEXTS[:6]), reference(TEXTS[:6]), strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5)
    assert OnnxClassifier.from_pretrained(out).path.name == "model_quantized.onnx"  # int8 by default


def test_export_records_how_it_was_made(seq_export):
    out = seq_export.output_dir
    summary = json.loads(seq_export.summary_path.read_text())
    assert summary["arguments"]["quantize"] == "dynamic" and summary["arguments"]["optimize"] == 2
    assert summary["arguments"]["preset"] in PRESETS
    assert summary["files"] == {
        "fp32": "model.onnx",
        "optimized": "model_optimized.onnx",
        "int8": "model_quantized.onnx",
    }
    assert summary["sizes_bytes"]["int8"] == (out / "model_quantized.onnx").stat().st_size
    assert set(summary["parity"]) == {"fp32", "optimized", "int8"}
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(summary["versions"])
    assert summary["exporter"]["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    quantization = summary["int8_choice"]["quantization"]
    assert quantization["is_static"] is False and quantization["preset"] == summary["arguments"]["preset"]
    assert summary["fusion"]["used"] is True and summary["fusion"]["complete"] is True


def test_dynamic_quantized_graph_has_integer_ops(seq_export):
    fp32, int8 = op_types(seq_export.onnx_path), op_types(seq_export.quantized_path)
    assert not INTEGER_OPS & set(fp32)
    assert int8["MatMulInteger"] > 0 and int8["DynamicQuantizeLinear"] > 0
    assert seq_export.quantized_path.stat().st_size < seq_export.onnx_path.stat().st_size
    # Transformer fusions happened in the optimized variant.
    assert {"Attention", "SkipLayerNormalization"} & set(op_types(seq_export.optimized_path))


def test_token_classification_static_round_trip(tmp_path):
    model_dir = save_wordpiece_model(tmp_path / "tok", token=True)
    result = export(
        model_dir,
        tmp_path / "onnx",
        quantize="static",
        calibration_texts=TEXTS,
        calibration_samples=16,
        parity_texts=TEXTS,
        max_length=32,
        # Static int8 of a random model flips a few near-tie tokens; agreement is still checked below.
        min_agreement=0.9,
    )
    assert result.optimized_path is None
    assert result.parity["fp32"].max_abs_diff <= 1e-4
    assert result.parity["int8"].agreement >= 0.9
    ops = op_types(result.quantized_path)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert result.quantized_path.stat().st_size < result.onnx_path.stat().st_size
    summary = json.loads(result.summary_path.read_text())
    assert summary["calibration"] == {"method": "minmax", "num_samples": 16, "max_length": 32}

    expected, enc = torch_logits(model_dir, TEXTS[:6], token=True)
    tagger = OnnxClassifier.from_pretrained(result.output_dir, file_name="model.onnx")
    logits = tagger.logits({k: v.numpy() for k, v in enc.items()})
    mask = enc["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(logits[mask], expected[mask], atol=1e-4, rtol=0)

    # Tagged tokens as pipeline("token-classification") gives them (no aggregation, "O" left out).
    reference = pipeline("token-classification", model=str(model_dir), tokenizer=str(model_dir))
    keys = ("entity", "index", "word", "start", "end")
    for text in ("w1 w2 w3", TEXTS[5]):
        got, want = tagger(text)[0], reference(text)
        assert [tuple(e[k] for k in keys) for e in got] == [tuple(e[k] for k in keys) for e in want]
        assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want], abs=1e-5)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_static_quantization_with_histogram_calibration(seq_dir, tmp_path, method):
    # Regression: with ORT's default static op list the attention-mask fill (-3.4e38) reached the histogram
    # calibrators, which failed with "Too many bins for data range".
    result = export(
        seq_dir,
        tmp_path,
        quantize="static",
        calibration_method=method,
        calibration_texts=TEXTS,
        calibration_samples=len(TEXTS),
        parity_samples=16,
        max_length=32,
        min_agreement=0.9,
    )
    assert op_types(result.quantized_path)["QuantizeLinear"] > 0
    assert json.loads(result.summary_path.read_text())["calibration"]["method"] == method


def test_check_parity_passes_on_own_export_with_synthetic_inputs(seq_dir, seq_export):
    report = check_parity(seq_dir, seq_export.onnx_path, num_samples=20, max_length=40)
    assert report.num_samples == 20
    assert report.max_abs_diff <= 1e-4 and report.agreement is None


@pytest.fixture(scope="module")
def other_export(tmp_path_factory):
    """The export of a second random model with the same architecture as `seq_dir`'s."""
    tmp = tmp_path_factory.mktemp("other")
    return export(save_wordpiece_model(tmp / "model", seed=1), tmp / "onnx", min_agreement=0.0)


def test_check_parity_rejects_an_export_of_another_model(seq_dir, other_export):
    with pytest.raises(
        ParityError, match=r"max \|logit difference\| = [0-9.e+-]+ .*max_abs_diff=0.0001"
    ) as err:
        check_parity(seq_dir, other_export.onnx_path, texts=TEXTS)
    measured = float(re.search(r"= ([0-9.e+-]+) ", str(err.value)).group(1))
    assert measured > 1e-2 and measured == pytest.approx(err.value.report.max_abs_diff, rel=1e-2)
    assert "--max_abs_diff" in str(err.value)


def test_check_parity_rejects_a_corrupted_graph(seq_dir, seq_export, tmp_path):
    model = onnx.load(str(seq_export.onnx_path))
    weight = next(i for i in model.graph.initializer if "classifier" in i.name and len(i.dims) == 2)
    array = onnx.numpy_helper.to_array(weight).copy()
    array[:, 0] += 0.01  # a small, realistic corruption of one output column
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(model, str(corrupted))
    with pytest.raises(ParityError, match="max_abs_diff"):
        check_parity(seq_dir, corrupted, texts=TEXTS)
    # Unreadable bytes are a parity failure too, not a crash deep in onnxruntime.
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx graph")
    with pytest.raises(ParityError, match="Cannot load"):
        check_parity(seq_dir, garbage, texts=TEXTS)


def test_check_parity_rejects_a_disagreeing_int8_graph(seq_dir, seq_export, other_export):
    with pytest.raises(ParityError, match=r"agrees with the fp32 model on only .*min_agreement=0.99") as err:
        check_parity(seq_dir, seq_export.onnx_path, quantized_path=other_export.quantized_path, texts=TEXTS)
    assert err.value.report.agreement < 0.99  # the fp32 graph itself is fine: checked (and passed) first
    assert err.value.report.max_abs_diff > 1e-2  # int8 vs fp32: another model's int8 graph, far apart


def test_export_arguments_parse_and_validate():
    (args,) = HfArgumentParser(ExportArguments).parse_args_into_dataclasses(
        ["--model_dir", "m", "--output_dir", "o", "--optimize", "1", "--quantize", "static", "--per_channel"]
    )
    assert args.optimize == 1 and args.quantize == "static" and args.per_channel is True
    assert args.preset in PRESETS  # chosen from this CPU
    # The parsed arguments are what export_model takes, as a command line gives them.
    assert inspect.signature(export_model).parameters["args"].annotation in (
        ExportArguments,
        "ExportArguments",
    )
    for bad, name in [
        ({"quantize": "int4"}, "quantize"),
        ({"optimize": 3}, "optimize"),
        ({"preset": "avx9"}, "preset"),
        ({"calibration_method": "mse"}, "calibration_method"),
        ({"min_agreement": 1.5}, "min_agreement"),
        ({"max_abs_diff": 0.0}, "max_abs_diff"),
    ]:
        with pytest.raises(ValueError, match=name):
            ExportArguments(model_dir="m", output_dir="o", **bad)
