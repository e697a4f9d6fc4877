"""MAC counting of an exported encoder (`distilnlp.benchmark.macs`) and `benchmarks/int8_peak.py` on a tiny model."""

import importlib.util
import json
from pathlib import Path

from tiny import bert_config, export, save_wordpiece_model
from transformers import BertConfig

from distilnlp.benchmark.macs import bert_macs, matmul_macs, matmul_node_macs

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_peak.py"


def test_node_macs_follow_the_matmul_shapes():
    assert matmul_node_macs("MatMul", [2, 5, 7], [7, 3]) == 2 * 5 * 7 * 3
    # attention scores: (B, heads, S, d) x (B, heads, d, S)
    assert matmul_node_macs("MatMul", [2, 4, 9, 8], [2, 4, 8, 9]) == 2 * 4 * 9 * 8 * 9
    assert matmul_node_macs("Gemm", [3, 16], [5, 16], {"transB": 1}) == 3 * 16 * 5


def test_analytic_count_is_the_hand_computation():
    # H=32, I=64, 4 layers, 3 labels, B=2, S=10, written out term by term.
    config = bert_config(hidden=32, layers=4, heads=4, num_labels=3)
    projections = 4 * 10 * 32 * 32  # Q, K, V, output dense
    feed_forward = 2 * 10 * 32 * 64  # up and down
    attention = 2 * 10 * 10 * 32  # Q K^T and P V over all heads
    head = 32 * 32 + 32 * 3  # pooler on [CLS], classifier
    assert bert_macs(config, 2, 10) == 2 * (4 * (projections + feed_forward + attention) + head)


def test_graph_count_matches_the_hand_computation_for_the_int8_and_fp32_graphs(tmp_path):
    model = save_wordpiece_model(tmp_path / "model", layers=2)
    out = tmp_path / "onnx"
    export(model, out, parity_samples=4, min_agreement=0.0, max_accuracy_drop=1.0)
    config = BertConfig.from_pretrained(out)
    # 2 layers, H=32, I=64, 3 labels; B=3, S=12.
    per_layer = 4 * 12 * 32 * 32 + 2 * 12 * 32 * 64 + 2 * 12 * 12 * 32
    expected = 3 * (2 * per_layer + 32 * 32 + 32 * 3)
    assert bert_macs(config, 3, 12) == expected
    int8 = matmul_macs(out / "model_quantized.onnx", batch=3, sequence_length=12)
    fp32 = matmul_macs(out / "model.onnx", batch=3, sequence_length=12)
    assert int8["total"] == fp32["total"] == expected
    # The fused int8 graph: everything but the attention products (inside QAttention, fp32) is int8.
    assert int8["int8"] == expected - 3 * 2 * (2 * 12 * 12 * 32) and fp32["int8"] == 0
    assert int8["by_op"]["QAttention"] == 3 * 2 * 3 * 12 * 32 * 32
    # 6 matmuls with a weight + 2 attention products per layer, then pooler and classifier.
    assert fp32["nodes"] == 2 * 8 + 2
    # Per layer one QAttention and 3 MatMulInteger, then pooler and classifier.
    assert int8["nodes"] == 2 * 4 + 2


def test_int8_peak_script_reports_peak_macs_and_fractions_on_a_tiny_model(tmp_path):
    model = save_wordpiece_model(tmp_path / "model", layers=1)
    out = tmp_path / "onnx"
    export(model, out, parity_samples=4, min_agreement=0.0, max_accuracy_drop=1.0)
    spec = importlib.util.spec_from_file_location("int8_peak", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result_file = tmp_path / "peak.json"
    argv = ["--model", str(out), "--quick", "--sequence_length", "8", "--runs", "2", "--peak_runs", "1"]
    script.main([*argv, "--threads", "1", "--output", str(result_file)])
    report = json.loads(result_file.read_text())
    assert report["peak_int8_gops"] > 0 and report["threads"] == 1
    for batch in ("1", "32"):
        entry = report["batches"][batch]
        assert entry["macs"]["total"] == entry["analytic_macs"] > 0
        assert entry["fraction_of_int8_peak"] > 0
    assert "graph_optimization_level=disable_all" in report["knobs"]
    # The export's graph is fused; the unfused one is timed beside it.
    assert report["fused"] and report["knobs"]["unfused int8 (MatMulInteger only)"]["1"]["p50_ms"] > 0
    assert result_file.with_suffix(".md").is_file()
