"""DistillationTrainer on tiny random BERT teachers and students."""

import os

import pytest
import torch
from safetensors.torch import load_file
from tiny import (
    assert_accumulation_matches_one_batch,
    bert_config,
    pad_collate,
    quick_distillation_args,
    tiny_pair,
    token_dataset,
)
from transformers import BertForSequenceClassification, TrainingArguments

from distilnlp import DistillationTrainer, NonFiniteLossError
from distilnlp.distill.layers import pair_key
from distilnlp.distill.losses import (
    attention_kl_loss,
    hidden_mse_loss,
    logit_binary_kl_loss,
    logit_kl_loss,
    logit_mse_loss,
)
from distilnlp.runs.artifacts import PROJECTIONS_FILE


def make_args(tmp_path, **overrides):
    return quick_distillation_args(
        tmp_path,
        **(
            dict(
                per_device_train_batch_size=8,
                logging_steps=2,
                alpha=0.5,
                hidden_weight=1.0,
                attention_weight=1.0,
            )
            | overrides
        ),
    )


def make_trainer(tmp_path, teacher, student, dataset, **overrides):
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, **overrides),
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=pad_collate,
    )


def student_params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- exact loss composition


def test_loss_is_the_weighted_sum_of_hand_computed_components(tmp_path):
    teacher, student = tiny_pair()
    dataset = token_dataset(16)
    trainer = make_trainer(
        tmp_path, teacher, student, dataset, alpha=0.3, hidden_weight=0.7, attention_weight=2.0
    )
    batch = pad_collate([dataset[i] for i in range(6)])
    student.eval()
    loss = trainer.compute_loss(student, batch)

    with torch.no_grad():
        s_out = student(**batch, output_hidden_states=True, output_attentions=True)
        t_out = teacher(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
            output_attentions=True,
        )
    mask = batch["attention_mask"]
    soft = logit_kl_loss(s_out.logits, t_out.logits, 2.0)
    hard = torch.nn.functional.cross_entropy(s_out.logits, batch["labels"])
    projections = student.distillation_projections
    pairs = [(0, 0), (1, 2), (2, 4)]  # uniform, 2 student layers of 4
    hidden = torch.stack(
        [
            hidden_mse_loss(projections[pair_key(s, t)](s_out.hidden_states[s]), t_out.hidden_states[t], mask)
            for s, t in pairs
        ]
    ).mean()
    attention = torch.stack(
        [attention_kl_loss(s_out.attentions[s - 1], t_out.attentions[t - 1], mask) for s, t in pairs[1:]]
    ).mean()
    expected = 0.3 * soft + 0.7 * hard + 0.7 * hidden + 2.0 * attention
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert hidden.item() > 0 and attention.item() > 0 and soft.item() > 0


@pytest.mark.parametrize("problem", ["multi_label_classification", "regression"])
def test_soft_target_loss_follows_the_problem_type(tmp_path, problem):
    num_labels = 3 if problem == "multi_label_classification" else 1
    teacher, student = tiny_pair(num_labels=num_labels, problem_type=problem)
    rows = token_dataset(8)
    batch = pad_collate([rows[i] for i in range(8)])
    batch["labels"] = torch.rand(8, num_labels) if num_labels > 1 else torch.randn(8)
    if problem == "multi_label_classification":
        batch["labels"] = (batch["labels"] > 0.5).float()
    trainer = make_trainer(
        tmp_path, teacher, student, rows, hidden_weight=0.0, attention_weight=0.0, alpha=0.4
    )
    student.eval()
    loss = trainer.compute_loss(student, batch)
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if problem == "regression":
        soft = logit_mse_loss(s_logits, t_logits)
        hard = torch.nn.functional.mse_loss(s_logits.squeeze(-1), batch["labels"])
    else:
        soft = logit_binary_kl_loss(s_logits, t_logits, 2.0)
        hard = torch.nn.functional.binary_cross_entropy_with_logits(s_logits, batch["labels"])
    assert loss.item() == pytest.approx((0.4 * soft + 0.6 * hard).item(), rel=1e-5)


def test_token_classification_soft_loss_counts_real_tokens_only(tmp_path):
    teacher, student = tiny_pair(token=True, student_hidden=32, student_heads=4)
    dataset = token_dataset(8, token=True)
    trainer = make_trainer(
        tmp_path,
        teacher,
        student,
        dataset,
        hidden_weight=0.5,
        attention_weight=0.0,
        alpha=0.5,
        token_soft_positions="tokens",  # every real token (the default, words, is tested in test_token_classification)
    )
    batch = pad_collate([dataset[i] for i in range(8)])
    student.eval()
    loss = trainer.compute_loss(student, batch)
    mask = batch["attention_mask"]
    with torch.no_grad():
        s_out = student(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
        t_out = teacher(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
    soft = logit_kl_loss(s_out.logits, t_out.logits, 2.0, mask)
    hard = torch.nn.functional.cross_entropy(
        s_out.logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100
    )
    hidden = torch.stack(
        [
            hidden_mse_loss(s_out.hidden_states[s], t_out.hidden_states[t], mask)
            for s, t in [(0, 0), (1, 2), (2, 4)]
        ]
    ).mean()
    assert not hasattr(student, "distillation_projections")  # equal widths: no projection
    assert loss.item() == pytest.approx((0.5 * soft + 0.5 * hard + 0.5 * hidden).item(), rel=1e-5)


# --------------------------------------------------------------------------- gradients and teacher


def test_gradients_reach_student_and_projections_only(tmp_path):
    teacher, student = tiny_pair()
    dataset = token_dataset(8)
    trainer = make_trainer(tmp_path, teacher, student, dataset)
    student.train()
    trainer.compute_loss(student, pad_collate([dataset[i] for i in range(8)])).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())
    named = dict(student.named_parameters())
    assert any(k.startswith("distillation_projections.") for k in named)
    no_grad = [k for k, p in named.items() if p.grad is None or p.grad.abs().sum() == 0]
    # The pooler of the last layer feeds the classifier, so every student weight gets a gradient.
    assert no_grad == [], no_grad


def test_training_leaves_teacher_bit_identical_and_logs_every_component(tmp_path):
    teacher, student = tiny_pair(dropout=0.1)
    before = student_params(teacher)
    trainer = make_trainer(tmp_path, teacher, student, token_dataset(32), max_steps=4, logging_steps=2)
    trainer.train()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.training
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    args = trainer.args
    for entry in logs:
        for name in ("loss_soft", "loss_hard", "loss_hidden", "loss_attention"):
            assert name in entry and entry[name] >= 0
        combined = (
            args.alpha * entry["loss_soft"]
            + (1 - args.alpha) * entry["loss_hard"]
            + args.hidden_weight * entry["loss_hidden"]
            + args.attention_weight * entry["loss_attention"]
        )
        assert entry["loss"] == pytest.approx(combined, abs=2e-4)
    metrics = trainer.evaluate()
    for name in ("eval_loss_soft", "eval_loss_hard", "eval_loss_hidden", "eval_loss_attention"):
        assert name in metrics


def test_outputs_are_only_requested_when_a_weight_needs_them(tmp_path, monkeypatch):
    teacher, student = tiny_pair()
    dataset = token_dataset(8)
    trainer = make_trainer(tmp_path, teacher, student, dataset, hidden_weight=0.0, attention_weight=0.0)
    seen = []
    for model in (teacher, student):
        model.register_forward_hook(lambda m, a, kw, out: seen.append(dict(kw)), with_kwargs=True)
    trainer.compute_loss(student, pad_collate([dataset[i] for i in range(4)]))
    assert len(seen) == 2
    assert all("output_hidden_states" not in kw and "output_attentions" not in kw for kw in seen)


def test_distilled_student_gets_closer_to_the_teacher(tmp_path):
    teacher, student = tiny_pair(seed=1, student_hidden=32, student_heads=4)
    train = token_dataset(96, seed=1, teacher=teacher)
    held_out = pad_collate([token_dataset(32, seed=7)[i] for i in range(32)])
    del held_out["labels"]

    def distance():
        student.eval()
        with torch.no_grad():
            s_out = student(**held_out, output_hidden_states=True)
            t_out = teacher(**held_out, output_hidden_states=True)
        kl = logit_kl_loss(s_out.logits, t_out.logits).item()
        hidden = hidden_mse_loss(
            s_out.hidden_states[-1], t_out.hidden_states[-1], held_out["attention_mask"]
        ).item()
        return kl, hidden

    kl_before, hidden_before = distance()
    trainer = make_trainer(tmp_path, teacher, student, train, max_steps=36, learning_rate=2e-3, alpha=1.0)
    trainer.train()
    kl_after, hidden_after = distance()
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)
    assert hidden_after < 0.5 * hidden_before, (hidden_before, hidden_after)


# --------------------------------------------------------------------------- accumulation and resume


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    """Varying lengths make per-micro-batch token averages differ from the window's: counts must be global."""
    assert_accumulation_matches_one_batch(make_trainer, tmp_path, logging_steps=1, attention_loss="mse")


def test_resume_from_checkpoint_restores_projections_and_continues_identically(tmp_path):
    dataset = token_dataset(48, seed=4)
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, logging_steps=3, data_seed=0)

    teacher, student = tiny_pair(seed=2)
    straight = make_trainer(tmp_path / "straight", teacher, student, dataset, **common)
    straight.train()
    expected = student_params(student)

    checkpoint = tmp_path / "straight" / "run" / "checkpoint-3"
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert any(k.startswith("distillation_projections.") for k in saved)

    teacher, student = tiny_pair(seed=2)
    initial_projection = student_params(student).get("distillation_projections.s1_t2.weight")
    assert initial_projection is None  # attached by the trainer, not yet present
    resumed = make_trainer(tmp_path / "resumed", teacher, student, dataset, **common)
    fresh_projection = student.distillation_projections["s1_t2"].weight.detach().clone()
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6
    assert not torch.equal(fresh_projection, saved["distillation_projections.s1_t2.weight"])
    for key, value in expected.items():
        torch.testing.assert_close(student.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_save_model_writes_a_clean_student_and_the_projections_beside_it(tmp_path):
    teacher, student = tiny_pair()
    trainer = make_trainer(tmp_path, teacher, student, token_dataset(16), max_steps=1)
    trainer.train()
    out = tmp_path / "final"
    trainer.save_model(str(out))
    weights = load_file(str(out / "model.safetensors"))
    assert not any("distillation_projections" in k for k in weights)
    projections = load_file(str(out / PROJECTIONS_FILE))
    assert set(projections) == {
        f"{pair_key(s, t)}.{p}" for s, t in [(0, 0), (1, 2), (2, 4)] for p in ("weight", "bias")
    }
    torch.testing.assert_close(projections["s1_t2.weight"], student.distillation_projections["s1_t2"].weight)
    reloaded = BertForSequenceClassification.from_pretrained(str(out))
    batch = pad_collate([token_dataset(4)[i] for i in range(4)])
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, student(**batch).logits)
    assert not os.path.exists(out / "teacher")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(vocab_size=99), r"teacher's vocabulary \(120 tokens\) and the student's \(99\) differ"),
        (dict(num_labels=5), "teacher predicts 3 labels but the student 5"),
    ],
)
def test_incompatible_models_fail_at_construction(tmp_path, change, message):
    teacher, _ = tiny_pair()
    config = bert_config(16, 2, 2)
    for key, value in change.items():
        setattr(config, key, value)
    student = BertForSequenceClassification(config)
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, teacher, student, token_dataset(4))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(layer_mapping="1:2,2:9"),
            r"pair 2:9 is out of range: the student has layers 0..2 and the teacher 0..4",
        ),
        (dict(layer_mapping="3:4"), r"pair 3:4 is out of range"),
        (dict(layer_mapping="0:2"), "has no attention map.*attention maps cannot be compared"),
        (dict(layer_mapping="0:0"), "maps no encoder layers"),
    ],
)
def test_bad_layer_mappings_fail_at_construction(tmp_path, overrides, message):
    teacher, student = tiny_pair()
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, teacher, student, token_dataset(4), **overrides)


def test_attention_implementation_without_maps_is_rejected(tmp_path):
    teacher, student = tiny_pair()
    teacher.config._attn_implementation_internal = "flash_attention_2"
    with pytest.raises(ValueError, match="cannot return attention maps.*attn_implementation='eager'"):
        make_trainer(tmp_path, teacher, student, token_dataset(4))
    # Without attention distillation the same teacher is fine.
    make_trainer(tmp_path, teacher, student, token_dataset(4), attention_weight=0.0)


def test_attention_distillation_turns_off_student_attention_dropout(tmp_path):
    teacher, student = tiny_pair(dropout=0.1)
    make_trainer(tmp_path, teacher, student, token_dataset(4))
    attention_dropouts = [m.p for n, m in student.named_modules() if n.endswith("attention.self.dropout")]
    hidden_dropouts = [m.p for n, m in student.named_modules() if n.endswith("output.dropout")]
    assert attention_dropouts == [0.0, 0.0]
    assert all(p == 0.1 for p in hidden_dropouts)


def test_plain_training_arguments_and_missing_teacher_are_rejected(tmp_path):
    teacher, student = tiny_pair()
    with pytest.raises(TypeError, match="needs DistillationTrainingArguments"):
        DistillationTrainer(
            model=student, teacher_model=teacher, args=TrainingArguments(output_dir=str(tmp_path))
        )
    with pytest.raises(TypeError, match="teacher_model must be a transformers PreTrainedModel"):
        DistillationTrainer(model=student, teacher_model=None, args=make_args(tmp_path))


def test_nan_loss_is_a_clear_error(tmp_path):
    teacher, student = tiny_pair()
    with torch.no_grad():
        teacher.classifier.weight.fill_(float("nan"))
    trainer = make_trainer(
        tmp_path, teacher, student, token_dataset(16), hidden_weight=0.0, attention_weight=0.0
    )
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 0 \(soft=nan.*Lower the learning rate"):
        trainer.train()
