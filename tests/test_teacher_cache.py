"""Teacher-logit cache: fingerprints, stale / corrupted caches, equality with the live teacher, top-k, ONNX."""

import json

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from datasets import Dataset, load_from_disk
from tiny import quick_distillation_args, tiny_pair, tiny_tokenizer, token_dataset
from transformers import DataCollatorWithPadding

from distilnlp import DistillationTrainer
from distilnlp.distill.losses import logit_kl_loss
from distilnlp.onnx import export_teacher
from distilnlp.teacher_cache import (
    LOGITS,
    METADATA_FILE,
    CorruptTeacherCacheError,
    StaleTeacherCacheError,
    TeacherCache,
    TeacherCacheError,
    attach_teacher_logits,
    build_teacher_cache,
    compute_teacher_logits,
    teacher_cache_fingerprint,
)
from distilnlp.teacher_cache.fingerprint import weights_fingerprint


@pytest.fixture(autouse=True)
def fresh_mixed_precision(monkeypatch):
    """`TrainingArguments(bf16=True)` earlier in the session leaves ACCELERATE_MIXED_PRECISION=bf16 in the
    environment (and accelerate's shared state), which every later Trainer would inherit: start clean."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    AcceleratorState._reset_state()


TEXTS = [" ".join(f"w{(7 * i + j) % 100}" for j in range(4 + i % 9)) for i in range(24)]


def tokenize(tokenizer, texts=TEXTS, max_length=12, labels=None):
    data = Dataset.from_dict({"text": texts, "labels": labels or [i % 3 for i in range(len(texts))]})
    return data.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    )


def make_args(tmp_path, **overrides):
    return quick_distillation_args(tmp_path, **(dict(alpha=0.6) | overrides))


@pytest.fixture
def tokenizer(tmp_path):
    return tiny_tokenizer(tmp_path / "tokenizer")


# --------------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_when_any_input_changes(tmp_path, tokenizer):
    teacher, _ = tiny_pair()
    data = tokenize(tokenizer)
    base = teacher_cache_fingerprint(teacher, tokenizer, {"train": data}, max_length=12)
    assert base == teacher_cache_fingerprint(teacher, tokenizer, {"train": data}, max_length=12)

    changed_weights, _ = tiny_pair()
    with torch.no_grad():
        changed_weights.classifier.bias[0] += 1e-4
    other_tokenizer = tiny_tokenizer(tmp_path / "other")
    other_tokenizer.add_tokens(["newword"])
    edited = TEXTS.copy()
    edited[3] = "w1 w2"
    variants = {
        "weights": teacher_cache_fingerprint(changed_weights, tokenizer, {"train": data}, max_length=12),
        "tokenizer": teacher_cache_fingerprint(teacher, other_tokenizer, {"train": data}, max_length=12),
        "data": teacher_cache_fingerprint(teacher, tokenizer, {"train": tokenize(tokenizer, edited)}, 12),
        # Same tokenized inputs (no text reaches 16 tokens) but a different declared max_length.
        "max_length": teacher_cache_fingerprint(teacher, tokenizer, {"train": data}, max_length=16),
        "truncation": teacher_cache_fingerprint(
            teacher, tokenizer, {"train": tokenize(tokenizer, max_length=6)}, 12
        ),
        "top_k": teacher_cache_fingerprint(teacher, tokenizer, {"train": data}, max_length=12, top_k=2),
    }
    assert all(v != base for v in variants.values()), [k for k, v in variants.items() if v == base]
    assert len(set(variants.values())) == len(variants)
    # Labels do not change the teacher's logits, so they are not part of the key.
    relabelled = tokenize(tokenizer, labels=[-100] * len(TEXTS))
    assert teacher_cache_fingerprint(teacher, tokenizer, {"train": relabelled}, max_length=12) == base


def test_weights_fingerprint_of_a_folder_equals_that_of_the_loaded_model(tmp_path):
    teacher, _ = tiny_pair()
    teacher.save_pretrained(tmp_path / "teacher")
    assert weights_fingerprint(tmp_path / "teacher") == weights_fingerprint(teacher)
    with pytest.raises(FileNotFoundError, match="No \\*.safetensors weights"):
        weights_fingerprint(tmp_path)


# ------------------------------------------------------------------------------------ stale and corrupted


@pytest.fixture
def built(tmp_path, tokenizer):
    teacher, _ = tiny_pair()
    data = tokenize(tokenizer)
    cache = build_teacher_cache(
        tmp_path / "cache", teacher, {"train": data}, tokenizer=tokenizer, max_length=12
    )
    return teacher, data, cache


def test_a_stale_cache_is_rejected_naming_what_changed(tmp_path, tokenizer, built):
    teacher, data, cache = built
    assert attach_teacher_logits(data, cache.path, teacher=teacher, tokenizer=tokenizer, max_length=12)[
        LOGITS
    ]
    other_teacher, _ = tiny_pair(seed=1)
    with pytest.raises(StaleTeacherCacheError, match="stale: the teacher's weights changed"):
        attach_teacher_logits(data, cache.path, teacher=other_teacher)
    other_tokenizer = tiny_tokenizer(tmp_path / "other")
    other_tokenizer.add_tokens(["newword"])
    with pytest.raises(StaleTeacherCacheError, match="the tokenizer"):
        attach_teacher_logits(data, cache.path, tokenizer=other_tokenizer)
    with pytest.raises(StaleTeacherCacheError, match=r"max_length \(12 in the cache, 32 now\)"):
        attach_teacher_logits(data, cache.path, max_length=32)
    with pytest.raises(StaleTeacherCacheError, match="holds no split built from these 23 examples"):
        attach_teacher_logits(data.select(range(23)), cache.path)
    # The trainer refuses it too, before training starts.
    _, student = tiny_pair()
    with pytest.raises(StaleTeacherCacheError, match="teacher's weights"):
        DistillationTrainer(
            model=student,
            teacher_model=other_teacher,
            args=make_args(tmp_path, teacher_cache=str(cache.path)),
            train_dataset=data,
        )
    with pytest.raises(StaleTeacherCacheError, match=r"top_k \(None in the cache, 2 now\)"):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_args(tmp_path, teacher_cache=str(cache.path), teacher_cache_top_k=2),
            train_dataset=data,
        )


def test_a_corrupted_cache_is_rejected(built):
    _, data, cache = built
    split_dir = cache.path / "train"
    original = load_from_disk(str(split_dir))
    tampered = original.map(lambda row: {LOGITS: [v + 1.0 for v in row[LOGITS]]})
    tampered.save_to_disk(str(cache.path / "tampered"))
    for f in split_dir.iterdir():
        f.unlink()
    for f in (cache.path / "tampered").iterdir():
        f.rename(split_dir / f.name)
    # Checked before Arrow parses anything: the files no longer match their SHA-256 from build time.
    with pytest.raises(CorruptTeacherCacheError, match="train/.* does not match the SHA-256 digest"):
        attach_teacher_logits(data, cache.path)

    for f in split_dir.glob("*.arrow"):
        f.write_bytes(f.read_bytes()[:100])  # truncated Arrow file
    with pytest.raises(CorruptTeacherCacheError, match="train/.*arrow does not match the SHA-256"):
        attach_teacher_logits(data, cache.path)

    (cache.path / METADATA_FILE).write_text('{"key": ')
    with pytest.raises(CorruptTeacherCacheError, match="cannot be read"):
        TeacherCache.load(cache.path)
    with pytest.raises(CorruptTeacherCacheError, match="is not a teacher cache"):
        TeacherCache.load(cache.path / "train")


def test_build_refuses_to_replace_a_folder_that_is_not_a_cache(tmp_path, tokenizer):
    teacher, _ = tiny_pair()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(TeacherCacheError, match="is not a teacher cache"):
        build_teacher_cache(tmp_path / "precious", teacher, {"train": tokenize(tokenizer)})
    assert (tmp_path / "precious" / "notes.txt").exists()


def test_token_classification_and_bad_top_k_are_errors(tmp_path, tokenizer):
    token_teacher, _ = tiny_pair(token=True)
    with pytest.raises(TeacherCacheError, match="sequence classification only.*classifies tokens"):
        build_teacher_cache(tmp_path / "c", token_teacher, {"train": tokenize(tokenizer)})
    teacher, _ = tiny_pair()
    with pytest.raises(TeacherCacheError, match="teacher_cache_top_k=3 must be between 1 and"):
        build_teacher_cache(tmp_path / "c", teacher, {"train": tokenize(tokenizer)}, top_k=3)


# ------------------------------------------------------------------------------- training from the cache


def train_losses(tmp_path, name, teacher, dataset, tokenizer, **overrides):
    _, student = tiny_pair()
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path / name, gradient_accumulation_steps=2, **overrides),
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    return trainer, student, [(e["loss"], e["loss_soft"], e["loss_hard"]) for e in logs]


def test_training_from_the_cache_equals_training_with_the_live_teacher(tmp_path, tokenizer):
    dataset = token_dataset(40, seed=2)
    teacher, _ = tiny_pair()
    _, live_student, live = train_losses(tmp_path, "live", teacher, dataset, tokenizer)

    cache_dir = str(tmp_path / "cache")
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    # Built on first use (the teacher runs once per split), then the teacher is not run again.
    trainer, cached_student, cached = train_losses(
        tmp_path, "cached", teacher, dataset, tokenizer, teacher_cache=cache_dir
    )
    built_calls = len(calls)
    assert built_calls == 2  # train + validation, one batch of 64 each
    trainer.evaluate()
    assert len(calls) == built_calls
    # And without any teacher at all.
    trainer, no_teacher_student, no_teacher = train_losses(
        tmp_path, "no_teacher", None, dataset, tokenizer, teacher_cache=cache_dir
    )
    assert trainer.distillation_summary()["teacher_shape"]["layers"] == 4
    for run in (cached, no_teacher):
        assert np.allclose(run, live, rtol=1e-5, atol=1e-6), (run, live)
    for student in (cached_student, no_teacher_student):
        for (name, p), q in zip(student.named_parameters(), live_student.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_cache_without_teacher_cannot_feed_hidden_or_attention_losses(tmp_path, tokenizer):
    dataset = token_dataset(16)
    teacher, student = tiny_pair()
    cache = build_teacher_cache(tmp_path / "cache", teacher, {"train": dataset})
    with pytest.raises(ValueError, match="need the teacher's hidden states"):
        DistillationTrainer(
            model=student,
            teacher_model=None,
            args=make_args(tmp_path, teacher_cache=str(cache.path), hidden_weight=1.0),
            train_dataset=dataset,
        )
    with pytest.raises(
        TypeError, match="teacher_model must be a transformers PreTrainedModel.*teacher_cache"
    ):
        DistillationTrainer(
            model=student, teacher_model=None, args=make_args(tmp_path), train_dataset=dataset
        )


def test_top_k_soft_targets_are_the_teacher_softmax_renormalised_over_k(tmp_path, tokenizer):
    teacher, student = tiny_pair(num_labels=5)
    dataset = token_dataset(12, num_labels=5)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, teacher_cache=str(tmp_path / "cache"), teacher_cache_top_k=2, alpha=1.0),
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    meta = trainer.teacher_cache_info
    assert meta["key"]["top_k"] == 2 and 0 < meta["splits"]["train"]["topk_mass"]["min"] <= 1
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(12)])
    assert batch["teacher_topk_logits"].shape == (12, 2)
    student.eval()
    loss = trainer.compute_loss(student, batch)
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        t_logits, s_logits = teacher(**inputs).logits, student(**inputs).logits
    top = t_logits.topk(2, dim=-1)
    q = torch.zeros_like(t_logits).scatter(1, top.indices, torch.softmax(top.values / 2.0, -1))
    log_p = torch.log_softmax(s_logits / 2.0, -1)
    expected = 4.0 * (q * (torch.log(q.clamp_min(1e-30)) - log_p)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    full = logit_kl_loss(s_logits, t_logits, 2.0)
    assert loss.item() != pytest.approx(full.item(), rel=1e-3)  # it is an approximation


@pytest.mark.onnx
def test_onnx_backends_reproduce_the_torch_teacher(tmp_path):
    teacher, _ = tiny_pair(num_labels=3)
    data = {"train": token_dataset(40, seed=5)}
    reference = compute_teacher_logits(teacher, data, backend="torch")["train"].logits
    onnx = dict(batch_size=16, onnx_export=export_teacher)  # the exporter sits above the cache: passed in
    fp32 = compute_teacher_logits(teacher, data, backend="onnx", **onnx)["train"].logits
    assert np.abs(fp32 - reference).max() < 1e-4
    int8 = compute_teacher_logits(teacher, data, backend="onnx-int8", **onnx)["train"]
    assert (int8.logits.argmax(-1) == reference.argmax(-1)).all()
    assert 0 <= int8.fp32_reruns <= 40
    with pytest.raises(ValueError, match=r"onnx_export=distilnlp.onnx.export_teacher"):
        compute_teacher_logits(teacher, data, backend="onnx")


def test_metadata_records_how_the_cache_was_made(built):
    _, _, cache = built
    meta = json.loads((cache.path / METADATA_FILE).read_text())
    assert meta["backend"] == "torch" and meta["num_labels"] == 3 and meta["splits"]["train"]["rows"] == 24
    assert meta["teacher"]["task"] == "sequence-classification"
    assert set(meta["key"]) == {"teacher", "tokenizer", "max_length", "top_k", "student_tokenizer"}
    assert meta["key"]["student_tokenizer"] is None  # one tokenizer for both models
