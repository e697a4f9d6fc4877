"""A run whose teacher weights are all 0 (the hard-label baseline) never runs the teacher."""

import pytest
import torch
from tiny import pad_collate, quick_distillation_args, tiny_pair, token_dataset
from transformers import Trainer

from distilnlp import DistillationTrainer


def count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    return calls


def baseline_args(tmp_path, **overrides):
    values = dict(
        alpha=0.0,
        hidden_weight=0.0,
        attention_weight=0.0,
        max_steps=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        optim="sgd",
        learning_rate=1e-2,
        lr_scheduler_type="constant",
    )
    return quick_distillation_args(tmp_path, **(values | overrides))


def test_hard_label_baseline_never_runs_the_teacher_and_equals_plain_fine_tuning(tmp_path):
    dataset = token_dataset(32, seed=2, min_len=3, max_len=20)
    teacher, student = tiny_pair(seed=3)
    calls = count_forwards(teacher)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=baseline_args(tmp_path / "distill"),
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=pad_collate,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert calls[0] == 0
    assert "eval_loss_soft" not in metrics and "eval_loss_hard" in metrics

    _, plain_student = tiny_pair(seed=3)
    # The reference is one large batch (8 rows) per step: the same rows as the baseline's window of 2 x 4.
    # (transformers 5's own Trainer over-weights accumulated windows of BERT's mean loss, so it is no reference.)
    plain = Trainer(
        model=plain_student,
        args=baseline_args(tmp_path / "plain", per_device_train_batch_size=8, gradient_accumulation_steps=1),
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=pad_collate,
    )
    plain.train()
    for key, value in plain_student.state_dict().items():
        torch.testing.assert_close(student.state_dict()[key], value, rtol=1e-5, atol=1e-7, msg=key)
    assert metrics["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], rel=1e-5)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    plain_losses = [e["loss"] for e in plain.state.log_history if "loss" in e]
    assert losses == pytest.approx(plain_losses, rel=1e-5)


def test_the_baseline_needs_no_teacher_and_ignores_a_teacher_cache(tmp_path):
    dataset = token_dataset(8)
    _, student = tiny_pair()
    args = baseline_args(tmp_path, teacher_cache=str(tmp_path / "cache"), max_steps=1)
    trainer = DistillationTrainer(
        model=student, teacher_model=None, args=args, train_dataset=dataset, data_collator=pad_collate
    )
    trainer.train()
    assert not (tmp_path / "cache").exists()
    batch = pad_collate([dataset[i] for i in range(4)])
    student.eval()
    expected = torch.nn.functional.cross_entropy(student(**batch).logits, batch["labels"])
    assert trainer.compute_loss(student, batch).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(alpha_schedule="linear", alpha_end=0.5),
        dict(hidden_weight_schedule="linear", hidden_weight_end=1.0),
        dict(relation_weight_schedule="linear", relation_weight_end=1.0),
    ],
)
def test_a_weight_scheduled_to_grow_still_runs_the_teacher(tmp_path, overrides):
    teacher, student = tiny_pair()
    calls = count_forwards(teacher)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=baseline_args(tmp_path, max_steps=1, gradient_accumulation_steps=1, **overrides),
        train_dataset=token_dataset(8),
        data_collator=pad_collate,
    )
    trainer.train()
    assert calls[0] == 1
