"""`--transfer_dataset` reaches every distill path: soft labels from a file cover transfer texts, and a teacher
with another tokenizer labels the transfer texts (both train on more rows than without the flag)."""

import json

import pandas as pd
import pytest
from test_cross_tokenizer import cli_argv, save_student
from test_soft_labels import NAMES, write_jsonl
from tiny import save_tiny_model, write_topic_csv

from distilnlp.commands import any_teacher, stages
from distilnlp.commands.cli import main

TRANSFER = [f"w{i % 3} w{20 + i} w{40 + i % 7}" for i in range(20)]


@pytest.fixture
def rows_used(monkeypatch):
    """The training rows (all, unlabelled) each `train_student` call got."""
    seen = []

    def recording(student, teacher, args, plan, run_settings, trainer_kwargs):
        labels = trainer_kwargs["train_dataset"]["labels"]
        seen.append((len(labels), sum(label == -100 for label in labels)))
        return train_student(student, teacher, args, plan, run_settings, trainer_kwargs)

    train_student = stages.train_student
    monkeypatch.setattr(stages, "train_student", recording)
    monkeypatch.setattr(any_teacher, "train_student", recording)
    return seen


def test_soft_labels_cover_transfer_texts_and_id_keys_refuse_them(tmp_path, rows_used, capsys):
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    (tmp_path / "transfer.txt").write_text("\n".join(TRANSFER) + "\n")
    student = save_tiny_model(tmp_path / "student", num_labels=3, layers=2)
    texts = [*pd.read_csv(data)["text"], *TRANSFER]
    rows = [{"text": t, "probabilities": {n: 0.8 if n == NAMES[i % 3] else 0.1 for n in NAMES}}
            for i, t in enumerate(texts)]  # fmt: skip
    task_only = write_jsonl(tmp_path / "task.jsonl", rows[:60])  # a file row no task text matches is an error
    with_transfer = write_jsonl(tmp_path / "all.jsonl", rows)
    base = ["distill", "--student", str(student), "--dataset", str(data),
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--report_to", "none",
            "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true"]  # fmt: skip
    coverage = {}
    runs = (
        ("plain", ["--soft_labels", str(task_only)]),
        (
            "transfer",
            ["--soft_labels", str(with_transfer), "--transfer_dataset", str(tmp_path / "transfer.txt")],
        ),
    )
    for name, extra in runs:
        assert main([*base, "--output_dir", str(tmp_path / name), *extra]) == 0, capsys.readouterr().err
        results = json.loads((tmp_path / name / "distill_results.json").read_text())
        coverage[name] = results["soft_label_coverage"]["train"]
    assert rows_used == [(48, 0), (48 + 20, 20)]
    assert coverage == {"plain": 48, "transfer": 48 + 20}  # every transfer text has its soft label

    ids = tmp_path / "ids.csv"
    pd.read_csv(data).assign(id=range(60)).to_csv(ids, index=False)
    by_id = write_jsonl(tmp_path / "by_id.jsonl", [{"id": i, "probabilities": r["probabilities"]}
                                                     for i, r in enumerate(rows[:60])])  # fmt: skip
    argv = [*base, "--soft_labels", str(by_id), "--dataset", str(ids), "--output_dir", str(tmp_path / "id")]
    assert main([*argv, "--transfer_dataset", str(tmp_path / "transfer.txt")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--transfer_dataset cannot be used with --soft_labels keyed by id" in error


def test_a_teacher_with_another_tokenizer_labels_the_transfer_texts(tmp_path, rows_used, capsys):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    student = save_student(tmp_path / "student")
    (tmp_path / "transfer.txt").write_text("\n".join(TRANSFER) + "\n")
    cache = tmp_path / "cache"
    assert main([*cli_argv(tmp_path, teacher, student, "plain")]) == 0, capsys.readouterr().err
    transfer = ["--transfer_dataset", str(tmp_path / "transfer.txt"), "--teacher_cache", str(cache)]
    assert main([*cli_argv(tmp_path, teacher, student, "transfer"), *transfer]) == 0, capsys.readouterr().err
    assert rows_used == [(48, 0), (48 + 20, 20)]
    metadata = json.loads((cache / "distilnlp_teacher_cache.json").read_text())
    assert metadata["splits"]["train"]["rows"] == 48 + 20  # the teacher ran over the transfer texts too
