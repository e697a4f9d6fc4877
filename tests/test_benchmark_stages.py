"""`distilnlp benchmark` scores every model with its own tokenizer and by class name, and names each int8 stage
after its export's record."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from tiny import save_tiny_model, wordpiece_tokenizer, write_topic_csv
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from distilnlp.commands.cli import main

NAMES = ["alpha", "beta", "gamma"]  # the data's class names (sorted, as load_task_data orders them)
PERMUTED = [2, 0, 1]  # the permuted teacher's class j is the student's class PERMUTED[j]
QUICK = ["--latency_runs", "1", "--throughput_runs", "1", "--warmup", "0", "--batch_size", "8"]
QUICK += ["--sequence_length", "32", "--num_threads", "1"]


def benchmark(tmp_path, teacher, student, data, *extra) -> list[dict]:
    out = tmp_path / "bench"
    argv = ["benchmark", "--teacher", str(teacher), "--student", str(student), "--dataset", str(data)]
    assert main([*argv, "--output_dir", str(out), *QUICK, *extra]) == 0
    return json.loads((out / "benchmark.json").read_text())["stages"]


def by_name(stages: list[dict]) -> dict[str, dict]:
    return {stage["name"]: stage for stage in stages}


TEXTS = [" ".join(f"w{(11 * i + 5 * j) % 110 + 5}" for j in range(3 + i % 7)) for i in range(90)]


def labelled_by(model_dir, path, names):
    """A CSV of TEXTS labelled with the model's own predictions (tokenized by its own tokenizer): the model
    scores 1.0 on any split, when it is scored right."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
        predicted = model(**enc).logits.argmax(-1).tolist()
    assert min(predicted.count(c) for c in range(3)) >= 5  # every class in every split
    with open(path, "w", newline="") as f:
        rows = ((text, names[p]) for text, p in zip(TEXTS, predicted, strict=True))
        csv.writer(f).writerows([("text", "label"), *rows])
    return path


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("task")
    teacher = save_tiny_model(tmp / "teacher", layers=2, initializer_range=0.2)
    student = save_tiny_model(tmp / "student", layers=1, seed=1, initializer_range=0.2)
    return teacher, student, write_topic_csv(tmp / "topics.csv", n=60)


@pytest.mark.onnx
def test_a_trimmed_static_export_is_scored_with_its_own_tokenizer_and_labelled_static(task, tmp_path):
    teacher, student, data = task
    onnx = tmp_path / "onnx"
    export = [
        "export",
        str(student),
        "--output",
        str(onnx),
        "--dataset",
        str(data),
        "--trim_vocabulary",
        "true",
    ]
    gates = [
        "--min_agreement",
        "0",
        "--max_accuracy_drop",
        "1",
        "--fallback",
        "false",
        "--parity_samples",
        "8",
    ]
    assert main([*export, "--quantize", "static", "--calibration_samples", "8", *gates]) == 0
    vocabulary = json.loads((onnx / "distilnlp_export.json").read_text())["vocabulary"]
    assert vocabulary["vocab_size_after"] < vocabulary["vocab_size_before"]  # the teacher's ids overflow it

    stages = by_name(benchmark(tmp_path, teacher, student, data, "--onnx_dir", str(onnx)))
    assert list(stages) == [
        "teacher (PyTorch fp32)",
        "student (PyTorch fp32)",
        "student (ONNX fp32)",
        "student (ONNX int8 static)",  # passed as --onnx_dir, named after its export's record
    ]
    assert stages["student (ONNX fp32)"]["accuracy"] == stages["student (PyTorch fp32)"]["accuracy"]


def student_with_its_own_vocabulary(folder):
    """A student over another vocabulary: 'w17' -> w ##1 ##7 (16 ids, the teacher's 120 would overflow it)."""
    tokenizer = wordpiece_tokenizer(["w", *[f"##{d}" for d in range(10)]], model_max_length=64)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=3,
        initializer_range=1.0,  # a random model that predicts every class (seed 2: 20, 32 and 38 of TEXTS)
    )
    torch.manual_seed(2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.onnx
def test_a_student_with_another_tokenizer_is_scored_on_its_own_token_ids(task, tmp_path):
    teacher = task[0]
    student = student_with_its_own_vocabulary(tmp_path / "student")
    data = labelled_by(student, tmp_path / "predicted.csv", [f"LABEL_{i}" for i in range(3)])
    onnx = tmp_path / "onnx"
    export = ["export", str(student), "--output", str(onnx), "--dataset", str(data), "--quantize", "none"]
    assert main([*export, "--parity_samples", "8"]) == 0

    stages = by_name(benchmark(tmp_path, teacher, student, data, "--onnx_dir", str(onnx)))
    assert stages["student (PyTorch fp32)"]["accuracy"] == pytest.approx(1.0)  # it crashed (IndexError)
    assert stages["student (ONNX fp32)"]["accuracy"] == pytest.approx(1.0)  # ORT: indices out of bounds


@pytest.fixture(scope="module")
def named_models(tmp_path_factory):
    """A student named NAMES, the same model as a teacher listing its classes in the PERMUTED order, and a CSV
    labelled with the student's own predictions (so it scores 1.0 and an unaligned teacher 0.0)."""
    tmp = tmp_path_factory.mktemp("named")
    labels = {"id2label": dict(enumerate(NAMES)), "label2id": {n: i for i, n in enumerate(NAMES)}}
    student = save_tiny_model(tmp / "student", layers=1, seed=3, initializer_range=0.5, **labels)
    model = BertForSequenceClassification.from_pretrained(student).eval()
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[PERMUTED].clone())
        model.classifier.bias.copy_(model.classifier.bias[PERMUTED].clone())
    model.config.id2label = {i: NAMES[j] for i, j in enumerate(PERMUTED)}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    teacher = tmp / "teacher"
    model.save_pretrained(teacher)
    AutoTokenizer.from_pretrained(student).save_pretrained(teacher)
    data = labelled_by(student, tmp / "predicted.csv", NAMES)
    return teacher, student, data


def test_a_teacher_listing_the_classes_in_another_order_is_scored_by_name(named_models, tmp_path):
    teacher, student, data = named_models
    stages = benchmark(tmp_path, teacher, student, data)
    assert [stage["accuracy"] for stage in stages] == pytest.approx([1.0, 1.0])  # unaligned: the teacher 0.0
    assert stages[1]["accuracy_retained"] == pytest.approx(1.0)


def test_models_of_other_classes_are_refused_in_one_line(named_models, tmp_path, capsys):
    teacher, student, data = named_models
    other = tmp_path / "other"
    other.mkdir()
    for path in teacher.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "alpha", "1": "beta", "2": "delta"}
    config["label2id"] = {"alpha": 0, "beta": 1, "delta": 2}
    (other / "config.json").write_text(json.dumps(config))

    argv = ["benchmark", "--teacher", str(other), "--student", str(student), "--dataset", str(data)]
    assert main([*argv, "--output_dir", str(tmp_path / "bench"), *QUICK]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.strip()][-1]
    assert "['alpha', 'beta', 'gamma']" in error and "['alpha', 'beta', 'delta']" in error
    assert "Traceback" not in error and not (tmp_path / "bench" / "benchmark.json").exists()
