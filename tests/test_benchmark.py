"""The one-run benchmark of teacher / student / ONNX stages, on tiny random models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import EXPORT_WORDS, export, save_wordpiece_model
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    HfArgumentParser,
)

from distilnlp.benchmark.metrics import classification_scores
from distilnlp.benchmark.stages import (
    METRIC_KEYS,
    BenchmarkArguments,
    Stage,
    onnx_num_parameters,
    onnx_stage,
    run_benchmark,
    torch_stage,
)

WORDS = EXPORT_WORDS
TEXTS = [" ".join(WORDS[(11 * i + 17 * j) % len(WORDS)] for j in range(4 + i % 30)) for i in range(24)]
LABELS = [i % 3 for i in range(24)]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    teacher_dir = save_wordpiece_model(tmp / "teacher", layers=4)
    student_dir = save_wordpiece_model(tmp / "student", layers=2, seed=1)
    exported = export(student_dir, tmp / "onnx", min_agreement=0.0)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    args = BenchmarkArguments(
        output_dir=str(tmp / "report"),
        sequence_length=32,
        batch_size=8,
        num_threads=2,
        warmup=1,
        latency_runs=4,
        throughput_runs=2,
    )
    stages = [
        torch_stage("teacher", teacher_dir, tokenizer),
        torch_stage("student", student_dir, tokenizer),
        onnx_stage("student fp32 onnx", exported.output_dir, "model.onnx", tokenizer, num_threads=2),
        onnx_stage(
            "student int8 onnx", exported.output_dir, "model_quantized.onnx", tokenizer, num_threads=2
        ),
    ]
    results = run_benchmark(stages, TEXTS, LABELS, tokenizer, args)
    return {"results": results, "args": args, "teacher_dir": teacher_dir, "export": exported}


def test_benchmark_json_has_every_stage_and_metric(bench):
    path = Path(bench["args"].output_dir) / "benchmark.json"
    saved = json.loads(path.read_text())
    names = [s["name"] for s in saved["stages"]]
    assert names == ["teacher", "student", "student fp32 onnx", "student int8 onnx"]
    for stage in saved["stages"]:
        assert set(stage) == set(METRIC_KEYS)
        assert 0.0 <= stage["accuracy"] <= 1.0 and 0.0 <= stage["f1"] <= 1.0
        assert 0 < stage["latency_p50_ms"] <= stage["latency_p95_ms"]
        assert stage["throughput_samples_per_s"] > 0 and stage["size_mb"] > 0 and stage["num_parameters"] > 0
        assert stage["num_threads"] == 2
    assert saved["settings"]["sequence_length"] == 32 and saved["settings"]["num_examples"] == len(TEXTS)
    assert saved["stages"] == bench["results"]["stages"]


def test_benchmark_ratios_are_against_the_first_stage(bench):
    teacher, student, fp32, int8 = bench["results"]["stages"]
    assert teacher["speedup"] == 1.0 and teacher["size_ratio"] == 1.0
    for s in (student, fp32, int8):
        assert s["speedup"] == pytest.approx(teacher["latency_p50_ms"] / s["latency_p50_ms"])
        assert s["size_ratio"] == pytest.approx(s["size_mb"] / teacher["size_mb"])
        if teacher["accuracy"] > 0:
            assert s["accuracy_retained"] == pytest.approx(s["accuracy"] / teacher["accuracy"])
    # The 2-layer student is smaller than the 4-layer teacher; int8 smaller than fp32.
    assert student["size_ratio"] < 1.0 and int8["size_mb"] < fp32["size_mb"]
    assert student["num_parameters"] < teacher["num_parameters"]
    # The fp32 ONNX graph computes the same function as the PyTorch student.
    assert fp32["accuracy"] == student["accuracy"]


def test_benchmark_accuracy_matches_a_direct_evaluation(bench):
    model = BertForSequenceClassification.from_pretrained(bench["teacher_dir"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(bench["teacher_dir"])
    with torch.no_grad():
        logits = model(
            **tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
        ).logits
    expected = classification_scores(logits.argmax(-1).numpy(), LABELS)
    teacher = bench["results"]["stages"][0]
    assert teacher["accuracy"] == pytest.approx(expected["accuracy"])
    assert teacher["f1"] == pytest.approx(expected["f1"])


def test_benchmark_writes_markdown_and_png(bench):
    out = Path(bench["args"].output_dir)
    table = (out / "benchmark.md").read_text()
    assert table == bench["results"]["markdown"]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4  # header + one row per stage
    assert "| teacher |" in table and "| student int8 onnx |" in table and "p50 (ms)" in table
    png = (out / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_stage_sizes_and_parameters(bench):
    export = bench["export"]
    fp32 = bench["results"]["stages"][2]
    assert fp32["size_mb"] == pytest.approx(export.onnx_path.stat().st_size / 1e6)
    student_params = bench["results"]["stages"][1]["num_parameters"]
    # The exporter folds identical initializers (random-init biases are all zero), so allow a small gap.
    assert onnx_num_parameters(export.onnx_path) == pytest.approx(student_params, rel=0.05)


def test_custom_stage_and_validation(tmp_path):
    calls = []

    def constant(batch):
        calls.append(batch["input_ids"].shape)
        return np.tile([0.0, 1.0, 0.0], (len(batch["input_ids"]), 1))

    tokenizer = AutoTokenizer.from_pretrained(save_wordpiece_model(tmp_path / "m", layers=1))
    args = BenchmarkArguments(
        output_dir=str(tmp_path / "r"),
        sequence_length=16,
        batch_size=4,
        warmup=0,
        latency_runs=3,
        throughput_runs=1,
    )
    results = run_benchmark([Stage("always-1", constant, 1_000_000, 10)], TEXTS, LABELS, tokenizer, args)
    (stage,) = results["stages"]
    assert stage["accuracy"] == pytest.approx(LABELS.count(1) / len(LABELS))
    assert stage["size_mb"] == 1.0 and stage["num_parameters"] == 10
    assert (1, 16) in calls and (4, 16) in calls  # timed inputs padded to sequence_length

    (parsed,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(["--output_dir", "x"])
    assert parsed.num_threads == os.cpu_count() and parsed.batch_size == 32
    for name in ("batch_size", "latency_runs", "sequence_length"):
        with pytest.raises(ValueError, match=name):
            BenchmarkArguments(output_dir="x", **{name: 0})
    with pytest.raises(ValueError, match="at least one stage"):
        run_benchmark([], TEXTS, LABELS, tokenizer, args)
