"""The demo end to end on the real packaged MiniLM teacher and BBC News, with a tiny training budget."""

import json

import pytest
from transformers import AutoModelForSequenceClassification

from distilnlp.commands.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage_on_the_real_teacher_and_leaves_every_artifact(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--output_dir",
        str(out),
        "--max_train_samples",
        "96",
        "--teacher_epochs",
        "1",
        "--student_epochs",
        "1",
        "--latency_runs",
        "5",
        "--static_quantization",
        "false",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for stage in (
        "[1/4]",
        "[2/4]",
        "[3/4]",
        "[4/4]",
        "| teacher (PyTorch fp32) |",
        "| student (ONNX int8 dynamic) |",
    ):
        assert stage in printed, stage

    teacher = AutoModelForSequenceClassification.from_pretrained(out / "teacher")
    student = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert teacher.config.num_hidden_layers == 6 and student.config.num_hidden_layers == 1
    assert teacher.config.id2label == student.config.id2label and len(teacher.config.id2label) == 5
    for artifact in (
        "onnx/model.onnx",
        "onnx/model_quantized.onnx",
        "onnx/distilnlp_export.json",
        "benchmark/benchmark.json",
        "benchmark/benchmark.md",
        "benchmark/benchmark.png",
        "demo_results.json",
        "demo_results.md",
        "student/README.md",
    ):
        assert (out / artifact).is_file(), artifact
    results = json.loads((out / "demo_results.json").read_text())
    assert [s["name"] for s in results["benchmark"]["stages"]][-1] == "student (ONNX int8 dynamic)"
    assert results["distillation"]["student_test_accuracy"] > 0.2  # 5 classes: better than chance

    # A second run reuses every finished stage instead of training again.
    assert main(argv) == 0
    assert "[1/4]" not in capsys.readouterr().out
