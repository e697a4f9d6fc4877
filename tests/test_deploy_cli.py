"""`distilnlp export` and `distilnlp benchmark` on tiny models and a small CSV task."""

import json

import onnx
from tiny import save_tiny_model, write_topic_csv

from distilnlp.commands.cli import main
from distilnlp.onnx import OnnxClassifier


def test_export_then_benchmark_from_the_command_line(tmp_path, capsys):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3, layers=4, initializer_range=0.2)
    student = save_tiny_model(tmp_path / "student", num_labels=3, layers=2, seed=1, initializer_range=0.2)
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    onnx_dir = tmp_path / "onnx"

    assert (
        main(
            [
                "export",
                str(student),
                "--output",
                str(onnx_dir),
                "--dataset",
                str(data),
                "--min_agreement",
                "0.8",
                "--parity_samples",
                "6",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "parity" in out and str(onnx_dir) in out
    summary = json.loads((onnx_dir / "distilnlp_export.json").read_text())
    assert summary["parity"]
    ops = {node.op_type for node in onnx.load(str(onnx_dir / "model_quantized.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}

    classify = OnnxClassifier.from_pretrained(onnx_dir)  # the int8 graph
    assert classify.path.name == "model_quantized.onnx"
    assert classify("w0 w12 w13")[0]["label"].startswith("LABEL_")

    bench = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "--teacher",
                str(teacher),
                "--student",
                str(student),
                "--onnx_dir",
                str(onnx_dir),
                "--output_dir",
                str(bench),
                "--dataset",
                str(data),
                "--latency_runs",
                "3",
                "--throughput_runs",
                "1",
                "--warmup",
                "1",
                "--batch_size",
                "4",
                "--sequence_length",
                "32",
            ]
        )
        == 0
    )
    report = json.loads((bench / "benchmark.json").read_text())
    names = [stage["name"] for stage in report["stages"]]
    assert names == [
        "teacher (PyTorch fp32)",
        "student (PyTorch fp32)",
        "student (ONNX fp32)",
        "student (ONNX int8 dynamic)",
    ]
    assert "| student (ONNX int8 dynamic) |" in capsys.readouterr().out
    assert (bench / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
