"""Several teachers: soft targets are the weighted mean of their probabilities; features from one teacher."""

import json

import pytest
import torch
from tiny import bert_config, pad_collate, quick_distillation_args, tiny_pair, token_dataset
from transformers import BertForSequenceClassification

from distilnlp import DistillationTrainer
from distilnlp.distill.layers import pair_key
from distilnlp.distill.losses import hidden_mse_loss
from distilnlp.distill.teachers import mix_teacher_logits
from distilnlp.teacher_cache import (
    StaleTeacherCacheError,
    TeacherCache,
    TeacherCacheError,
    build_teacher_cache,
)
from distilnlp.teacher_cache.fingerprint import teachers_fingerprint, weights_fingerprint


def teachers_and_student(count=3, seed=0):
    teachers = []
    for index in range(count):
        torch.manual_seed(seed + 10 * index)
        config = bert_config(initializer_range=0.5)  # O(1) logits: teachers that really disagree
        teachers.append(BertForSequenceClassification._from_config(config, attn_implementation="eager"))
    _, student = tiny_pair(seed=seed)
    return teachers, student


def make_trainer(tmp_path, teachers, student, dataset=None, **overrides):
    values = dict(alpha=1.0, hidden_weight=0.0, attention_weight=0.0)
    return DistillationTrainer(
        model=student,
        teacher_model=teachers,
        args=quick_distillation_args(tmp_path, **(values | overrides)),
        train_dataset=dataset if dataset is not None else token_dataset(8),
        eval_dataset=dataset,
        data_collator=pad_collate,
    )


def unlabelled_batch(n=6, seed=3):
    rows = token_dataset(n, seed=seed, min_len=3, max_len=16)
    batch = pad_collate([rows[i] for i in range(n)])
    del batch["labels"]
    return batch


def reference_soft_loss(student, teachers, weights, batch, temperature):
    """T^2 * KL(p || softmax(z_s / T)) per example, p = sum_i w_i softmax(z_i / T), computed directly."""
    with torch.no_grad():
        q = torch.softmax(student(**batch).logits.double() / temperature, -1)
        p = sum(
            w * torch.softmax(t(**batch).logits.double() / temperature, -1)
            for w, t in zip(weights, teachers, strict=True)
        )
    return (temperature**2 * (p * (p / q).log()).sum(-1)).mean().item()


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_targets_are_the_weighted_mean_of_the_teachers_probabilities(tmp_path, temperature):
    teachers, student = teachers_and_student()
    trainer = make_trainer(tmp_path, teachers, student, teacher_weights="1,2,1", temperature=temperature)
    batch = unlabelled_batch()
    student.eval()
    loss = trainer.compute_loss(student, batch).item()
    assert loss == pytest.approx(
        reference_soft_loss(student, teachers, [0.25, 0.5, 0.25], batch, temperature), rel=1e-5
    )
    # Not the same as any single teacher, nor as equal weights.
    assert loss != pytest.approx(
        reference_soft_loss(student, teachers, [1 / 3] * 3, batch, temperature), rel=1e-3
    )


def test_mixing_multi_label_and_regression_and_token_logits():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(4, 5, generator=g) * 3 for _ in range(3)]
    w = torch.tensor([0.2, 0.3, 0.5])
    mixed = mix_teacher_logits(logits, w, 2.0, "multi_label_classification")
    expected = sum(wi * torch.sigmoid(z / 2.0) for wi, z in zip(w, logits, strict=True))
    torch.testing.assert_close(torch.sigmoid(mixed / 2.0), expected)
    mixed = mix_teacher_logits(logits, w, 2.0, "regression")
    torch.testing.assert_close(mixed, sum(wi * z for wi, z in zip(w, logits, strict=True)))
    tokens = [torch.randn(2, 7, 5, generator=g) for _ in range(3)]
    mixed = mix_teacher_logits(tokens, w, 0.5, None)
    expected = sum(wi * torch.softmax(z / 0.5, -1) for wi, z in zip(w, tokens, strict=True))
    torch.testing.assert_close(torch.softmax(mixed / 0.5, -1), expected)
    # A teacher sure enough to give another class probability ~0 keeps the mixture finite.
    confident = [torch.tensor([[300.0, -300.0]]), torch.tensor([[-300.0, 300.0]])]
    assert torch.isfinite(mix_teacher_logits(confident, torch.tensor([0.5, 0.5]), 1.0, None)).all()


def test_one_teacher_equals_a_list_of_one(tmp_path):
    teachers, student = teachers_and_student(count=1)
    batch = unlabelled_batch()
    student.eval()
    single = make_trainer(tmp_path / "a", teachers[0], student).compute_loss(student, batch)
    listed = make_trainer(tmp_path / "b", teachers, student, teacher_weights="3").compute_loss(student, batch)
    assert single.item() == listed.item()
    assert teachers_fingerprint(teachers) == weights_fingerprint(teachers[0])


def test_features_come_from_the_chosen_teacher(tmp_path):
    teachers, student = teachers_and_student(count=2)
    trainer = make_trainer(tmp_path, teachers, student, alpha=0.0, hidden_weight=1.0, feature_teacher=1)
    batch = unlabelled_batch()
    student.eval()
    loss = trainer.compute_loss(student, batch).item()
    with torch.no_grad():
        s_hidden = student(**batch, output_hidden_states=True).hidden_states
        projections = student.distillation_projections

        def hidden_loss(teacher):
            t_hidden = teacher(**batch, output_hidden_states=True).hidden_states
            pairs = [(0, 0), (1, 2), (2, 4)]
            terms = [
                hidden_mse_loss(
                    projections[pair_key(s, t)](s_hidden[s]), t_hidden[t], batch["attention_mask"]
                )
                for s, t in pairs
            ]
            return torch.stack(terms).mean().item()

        assert loss == pytest.approx(hidden_loss(teachers[1]), rel=1e-5)
        assert loss != pytest.approx(hidden_loss(teachers[0]), rel=1e-3)
    assert trainer.teacher_model is teachers[1]


def test_teachers_stay_frozen_while_the_student_trains(tmp_path):
    teachers, student = teachers_and_student(count=2)
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    trainer = make_trainer(tmp_path, teachers, student, token_dataset(16), alpha=0.5, max_steps=2)
    trainer.train()
    for teacher, state in zip(teachers, before, strict=True):
        assert all(p.grad is None for p in teacher.parameters())
        for key, value in state.items():
            assert torch.equal(teacher.state_dict()[key], value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(teacher_weights="0.5,-1"),
            r"teacher_weights='0.5,-1': every weight must be a finite number > 0",
        ),
        (dict(teacher_weights="a,b"), r"teacher_weights='a,b': give one number per teacher"),
        (dict(teacher_weights="1,nan"), "every weight must be a finite number > 0"),
        (dict(feature_teacher=-1), "feature_teacher must be >= 0"),
    ],
)
def test_bad_teacher_arguments_are_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        quick_distillation_args(tmp_path, **overrides)


def test_teacher_weights_and_index_must_fit_the_teachers(tmp_path):
    teachers, student = teachers_and_student(count=2)
    with pytest.raises(ValueError, match=r"teacher_weights has 3 value\(s\) but there are 2 teacher\(s\)"):
        make_trainer(tmp_path, teachers, student, teacher_weights="1,1,1")
    with pytest.raises(ValueError, match=r"feature_teacher=2 but there are 2 teacher\(s\): use 0..1"):
        make_trainer(tmp_path, teachers, student, feature_teacher=2)
    odd = BertForSequenceClassification(bert_config(num_labels=4))
    with pytest.raises(ValueError, match="Teacher 1 predicts 4 labels and the student 3"):
        make_trainer(tmp_path, [teachers[0], odd], student)


def test_an_ensemble_cache_keeps_each_teachers_logits_and_serves_every_temperature(tmp_path):
    teachers, student = teachers_and_student(count=2)
    data = token_dataset(12, seed=4)
    cache_dir = tmp_path / "cache"
    cached = make_trainer(
        tmp_path / "a", teachers, student, data, teacher_cache=str(cache_dir), teacher_weights="1,3"
    )
    cache = TeacherCache.load(cache_dir)
    assert cache.num_teachers == 2 and cache.num_labels == 3
    assert cache.key.teacher == teachers_fingerprint(teachers)
    assert (
        len(json.loads((cache_dir / "distilnlp_teacher_cache.json").read_text())["teacher"]["ensemble"]) == 2
    )
    assert len(cache.logits("train")[0]["teacher_logits"]) == 6
    rows = cached.train_dataset.select(range(6))
    batch = pad_collate([{k: r[k] for k in ("input_ids", "attention_mask")} for r in rows])
    student.eval()
    for temperature in (1.0, 4.0):
        cached.args.temperature = temperature
        batch_with_cache = dict(batch, teacher_logits=torch.tensor(rows["teacher_logits"]))
        expected = reference_soft_loss(student, teachers, [0.25, 0.75], batch, temperature)
        assert cached.compute_loss(student, batch_with_cache).item() == pytest.approx(expected, rel=1e-5)

    # Reading the cache needs no teacher; another teacher set is a stale cache.
    offline = make_trainer(
        tmp_path / "b", None, student, data, teacher_cache=str(cache_dir), teacher_weights="1,3"
    )
    assert offline._num_teachers == 2
    with pytest.raises(StaleTeacherCacheError, match="the teachers' weights"):
        cache.check(teachers[:1])
    with pytest.raises(StaleTeacherCacheError):
        make_trainer(tmp_path / "c", teachers[::-1], student, data, teacher_cache=str(cache_dir))
    with pytest.raises(TeacherCacheError, match="cannot be used with several teachers"):
        build_teacher_cache(tmp_path / "topk", teachers, {"train": data}, top_k=2)


@pytest.mark.slow
def test_finetune_seeds_make_teachers_that_distill_and_cache_teacher_read_as_an_ensemble(tmp_path):
    from safetensors.torch import load_file
    from tiny import save_tiny_model, write_topic_csv

    from distilnlp.commands.cli import main

    base = save_tiny_model(tmp_path / "pretrained", num_labels=2)
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    common = ["--dataset", str(data), "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true"]

    def finetune(name, seed):
        args = ["--model_name_or_path", str(base), "--output_dir", str(tmp_path / name), "--max_steps", "2"]
        assert main(["finetune", *args, "--seed", str(seed), "--save_strategy", "no", *common]) == 0
        return load_file(str(tmp_path / name / "model.safetensors"))["classifier.weight"]

    first, again, second = finetune("t1", 1), finetune("t1-again", 1), finetune("t2", 2)
    assert torch.equal(first, again) and not torch.equal(first, second)

    teachers = f"{tmp_path / 't1'},{tmp_path / 't2'}"
    recipe = tmp_path / "distill.yaml"
    recipe.write_text(
        json.dumps(
            dict(
                teacher=teachers,
                teacher_weights="1,3",
                feature_teacher=1,
                student_layers=2,
                hidden_weight=1.0,
                output_dir=str(tmp_path / "student"),
                teacher_cache=str(tmp_path / "cache"),
                max_steps=2,
                save_strategy="no",
            )
        )
    )
    assert main(["cache-teacher", str(recipe), *common]) == 0
    assert TeacherCache.load(tmp_path / "cache").num_teachers == 2
    assert main(["distill", str(recipe), *common]) == 0
    results = json.loads((tmp_path / "student" / "distill_results.json").read_text())
    assert results["teacher"] == str(tmp_path / "t2") and "teacher0_test_accuracy" in results
    assert results["ensemble"]["weights"] == [0.25, 0.75]
    assert "weighted mean of 2 teachers' probabilities" in (tmp_path / "student" / "README.md").read_text()
