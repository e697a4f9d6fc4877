"""Unlabelled transfer rows (label -100), labeled_fraction, and temperature / weight schedules."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState
from tiny import pad_collate, quick_distillation_args, tiny_pair, token_dataset, write_topic_csv

from distilnlp import DistillationTrainer
from distilnlp.data import UNLABELED, DataArguments, label_names, labeled_subset, load_task_data
from distilnlp.distill.losses import logit_kl_loss
from distilnlp.distill.schedules import schedule_value


@pytest.fixture(autouse=True)
def fresh_mixed_precision(monkeypatch):
    """`TrainingArguments(bf16=True)` earlier in the session leaves ACCELERATE_MIXED_PRECISION=bf16 in the
    environment (and accelerate's shared state), which every later Trainer would inherit: start clean."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    AcceleratorState._reset_state()


def make_args(tmp_path, **overrides):
    return quick_distillation_args(tmp_path, **(dict(alpha=0.3) | overrides))


def make_trainer(tmp_path, dataset=None, **overrides):
    teacher, student = tiny_pair()
    dataset = dataset if dataset is not None else token_dataset(16)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, **overrides),
        train_dataset=dataset,
        data_collator=pad_collate,
    )
    return trainer, teacher, student


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------------------------------ unlabelled rows


@pytest.mark.parametrize("labels", [[0, -100, 2, -100, -100, 1], [-100] * 6])
def test_unlabelled_rows_contribute_no_hard_label_loss(tmp_path, labels):
    trainer, teacher, student = make_trainer(tmp_path)
    rows = token_dataset(6)
    batch = pad_collate([rows[i] for i in range(6)])
    batch["labels"] = torch.tensor(labels)
    student.eval()
    loss = trainer.compute_loss(student, batch)
    loss.backward()
    got = grads(student)
    student.zero_grad()

    # By hand: soft loss over all 6 rows; cross-entropy averaged over the labelled rows only (none: 0).
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        t_logits = teacher(**inputs).logits
    s_logits = student(**inputs).logits
    labelled = batch["labels"] != -100
    expected = 0.3 * logit_kl_loss(s_logits, t_logits, 2.0)
    if labelled.any():
        expected = expected + 0.7 * F.cross_entropy(s_logits[labelled], batch["labels"][labelled])
    expected.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for name, value in grads(student).items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-7, msg=name)


def test_training_where_most_micro_batches_have_no_label_stays_finite(tmp_path):
    dataset = token_dataset(32)
    labels = [label if i % 8 == 0 else -100 for i, label in enumerate(dataset["labels"])]
    dataset = dataset.remove_columns("labels").add_column("labels", labels)
    trainer, _, _ = make_trainer(
        tmp_path, dataset, per_device_train_batch_size=2, gradient_accumulation_steps=2
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 4 and all(math.isfinite(e["loss"]) and math.isfinite(e["loss_hard"]) for e in logs)


def test_labeled_fraction_keeps_a_stratified_seeded_share_of_train_labels(tmp_path):
    csv = write_topic_csv(tmp_path / "topics.csv", n=300)
    full = load_task_data(DataArguments(dataset=str(csv)))
    args = DataArguments(dataset=str(csv), labeled_fraction=0.1)
    part = load_task_data(args)
    labels, original = np.array(part["train"]["label"]), np.array(full["train"]["label"])
    kept = labels != UNLABELED
    assert (labels[kept] == original[kept]).all()
    per_class = Counter(original.tolist())
    assert Counter(labels[kept].tolist()) == {c: max(1, round(0.1 * n)) for c, n in per_class.items()}
    assert np.array_equal(np.array(load_task_data(args)["train"]["label"]), labels)  # seeded
    other_seed = load_task_data(DataArguments(dataset=str(csv), labeled_fraction=0.1, split_seed=7))
    assert not np.array_equal(np.array(other_seed["train"]["label"]) != UNLABELED, kept)
    assert label_names(part) == ["alpha", "beta", "gamma"]
    for split in ("validation", "test"):  # only train is unlabelled
        assert part[split]["label"] == full[split]["label"]
    assert len(labeled_subset(part["train"], "label")) == kept.sum()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="labeled_fraction must be in \\(0, 1\\]"):
            DataArguments(labeled_fraction=bad)


# ---------------------------------------------------------------------------------------------- schedules


def test_schedule_values():
    assert schedule_value("constant", 2.0, None, 0.7) == 2.0
    assert [schedule_value("linear", 1.0, 3.0, p) for p in (0.0, 0.25, 1.0, 2.0)] == [1.0, 1.5, 3.0, 3.0]
    cosine = [schedule_value("cosine", 0.0, 1.0, p) for p in (0.0, 0.25, 0.5, 1.0)]
    assert cosine == pytest.approx([0.0, (1 - math.cos(math.pi / 4)) / 2, 0.5, 1.0])


def test_arguments_give_the_settings_at_a_progress(tmp_path):
    args = make_args(
        tmp_path,
        temperature=4.0,
        temperature_schedule="linear",
        temperature_end=1.0,
        alpha=0.9,
        alpha_schedule="cosine",
        alpha_end=0.1,
        hidden_weight_schedule="linear",
        hidden_weight_end=2.0,
    )
    start, middle, end = (args.loss_settings(p) for p in (0.0, 0.5, 1.0))
    assert (start.temperature, middle.temperature, end.temperature) == (4.0, 2.5, 1.0)
    assert (start.alpha, middle.alpha, end.alpha) == pytest.approx((0.9, 0.5, 0.1))
    assert (start.hidden_weight, middle.hidden_weight, end.hidden_weight) == (0.0, 1.0, 2.0)
    assert end.attention_weight == 0.0
    assert args.scheduled == ("temperature", "alpha", "hidden_weight")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(temperature_schedule="exp", temperature_end=1.0),
            "temperature_schedule must be one of constant",
        ),
        (dict(alpha_end=0.2), "alpha_end=0.2 is set but alpha_schedule is 'constant'"),
        (dict(hidden_weight_schedule="cosine"), "hidden_weight_schedule='cosine' needs hidden_weight_end"),
        (dict(temperature_schedule="linear", temperature_end=0.0), "temperature_end must be > 0"),
        (dict(alpha_schedule="linear", alpha_end=1.5), r"alpha_end must be in \[0, 1\]"),
        (
            dict(attention_weight_schedule="linear", attention_weight_end=-1.0),
            "attention_weight_end must be >= 0",
        ),
        (
            dict(teacher_cache_backend="tensorrt"),
            "teacher_cache_backend must be one of torch, onnx, onnx-int8",
        ),
    ],
)
def test_bad_schedules_are_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **overrides)


def test_trainer_follows_and_logs_the_schedules(tmp_path):
    trainer, _, student = make_trainer(
        tmp_path,
        temperature=1.0,
        temperature_schedule="linear",
        temperature_end=3.0,
        alpha=1.0,
        alpha_schedule="linear",
        alpha_end=0.0,
        hidden_weight_schedule="linear",
        hidden_weight_end=1.0,
    )
    # hidden_weight starts at 0 but grows: pairs and projections exist from the start.
    assert trainer.hidden_pairs == ((0, 0), (1, 2), (2, 4)) and hasattr(student, "distillation_projections")
    used = []
    original = trainer._soft_loss
    trainer._soft_loss = lambda *a, **k: used.append(a[-1]) or original(*a, **k)
    trainer.train()
    # The loss of step k (k = 0..3) uses progress k / 4; the log after it shows progress (k + 1) / 4.
    assert [s.temperature for s in used] == [1.0, 1.5, 2.0, 2.5]
    assert [s.hidden_weight for s in used] == [0.0, 0.25, 0.5, 0.75]
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["temperature"] for e in logs] == [1.5, 2.0, 2.5, 3.0]
    assert [e["alpha"] for e in logs] == [0.75, 0.5, 0.25, 0.0]
    assert [e["hidden_weight"] for e in logs] == [0.25, 0.5, 0.75, 1.0]
    assert "attention_weight" not in logs[0]
    summary = trainer.distillation_summary()["losses"]["schedules"]
    assert summary["temperature"] == {"schedule": "linear", "end": 3.0}
