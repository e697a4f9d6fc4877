"""Cross-tokenizer distillation: the teacher reads its own tokenization of the text (TeacherInputsCollator)."""

import json
import logging
import os
import subprocess

import pytest
import torch
from datasets import Dataset
from test_ddp import accelerate_launch
from tiny import bert_config, quick_distillation_args, save_tiny_model, tiny_tokenizer, write_topic_csv
from torch.utils.data import SequentialSampler
from transformers import BertForSequenceClassification, BertForTokenClassification, BertTokenizerFast

from distilnlp import DistillationTrainer, TeacherInputsCollator
from distilnlp.commands.cli import main
from distilnlp.distill.losses import soft_target_loss_for
from distilnlp.teacher_cache import METADATA_FILE, StaleTeacherCacheError
from distilnlp.teacher_cache.fingerprint import tokenizer_fingerprint

TEXTS = [" ".join(f"w{(7 * i + 3 * j) % 100}" for j in range(3 + i % 11)) for i in range(24)]
DIGITS = [str(d) for d in range(10)]


def student_tokenizer(folder):
    """WordPiece over 'w' + digit pieces: 'w17' -> w ##1 ##7. Another vocabulary (16 ids) and other lengths."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "w", *[f"##{d}" for d in DIGITS]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))


def models(problem_type="single_label_classification", num_labels=3, seed=0):
    torch.manual_seed(seed)
    extra = dict(problem_type=problem_type, initializer_range=0.3)
    teacher = BertForSequenceClassification(bert_config(num_labels=num_labels, **extra)).eval()
    student_cfg = bert_config(16, 2, 2, num_labels=num_labels, **extra)
    student_cfg.vocab_size = 16
    return teacher, BertForSequenceClassification(student_cfg)


def labels_for(problem_type, n, num_labels):
    g = torch.Generator().manual_seed(1)
    if problem_type == "regression":
        return torch.randn(n, generator=g).tolist()
    if problem_type == "multi_label_classification":
        return torch.randint(0, 2, (n, num_labels), generator=g).float().tolist()
    return torch.randint(0, num_labels, (n,), generator=g).tolist()


@pytest.fixture
def tokenizers(tmp_path):
    return student_tokenizer(tmp_path / "student-tok"), tiny_tokenizer(tmp_path / "teacher-tok")


def collator_for(tokenizers, **kwargs):
    student_tok, teacher_tok = tokenizers
    return TeacherInputsCollator(student_tok, teacher_tok, max_length=40, teacher_max_length=9, **kwargs)


@pytest.mark.parametrize(
    ("problem_type", "num_labels"),
    [("single_label_classification", 3), ("multi_label_classification", 3), ("regression", 1)],
)
@pytest.mark.parametrize("pretokenized", [False, True])
def test_soft_loss_equals_each_model_on_its_own_tokenization(
    tmp_path, tokenizers, problem_type, num_labels, pretokenized
):
    student_tok, teacher_tok = tokenizers
    teacher, student = models(problem_type, num_labels)
    data = Dataset.from_dict({"text": TEXTS, "labels": labels_for(problem_type, len(TEXTS), num_labels)})
    if pretokenized:  # the student's ids computed up front, the text kept for the teacher
        data = data.map(lambda b: student_tok(b["text"], truncation=True, max_length=40), batched=True)
    collator = collator_for(tokenizers)
    args = quick_distillation_args(tmp_path, alpha=1.0, temperature=2.0)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, data_collator=collator,
        processing_class=student_tok,
    )  # fmt: skip
    batch = collator([data[i] for i in range(len(data))])
    assert batch["input_ids"].shape[1] != batch["teacher_input_ids"].shape[1]
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)

    # By hand: each model reads one text at a time (no padding at all), tokenized by its own tokenizer.
    loss_fn = soft_target_loss_for(problem_type)
    per_example = []
    with torch.no_grad():
        for text in TEXTS:
            t_ids = teacher_tok(text, truncation=True, max_length=9, return_tensors="pt")
            s_ids = student_tok(text, truncation=True, max_length=40, return_tensors="pt")
            per_example.append(loss_fn(student(**s_ids).logits, teacher(**t_ids).logits, 2.0))
    expected = torch.stack(per_example).mean()
    torch.testing.assert_close(loss.float(), expected, rtol=1e-5, atol=1e-6)
    assert abs(expected.item()) > 1e-3  # the two models disagree: the check is not 0 == 0


def test_training_updates_only_the_student_and_accumulation_matches_one_batch(tmp_path, tokenizers):
    student_tok, _ = tokenizers
    data = Dataset.from_dict({"text": TEXTS[:16], "labels": labels_for("single", 16, 3)})

    class InOrder(DistillationTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    runs = {}
    for name, (batch, accumulation) in {"one": (8, 1), "accumulated": (4, 2)}.items():
        teacher, student = models()
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        args = quick_distillation_args(
            tmp_path / name, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
            max_steps=3, optim="sgd", lr_scheduler_type="constant", learning_rate=0.5, alpha=0.7,
        )  # fmt: skip
        trainer = InOrder(
            model=student, teacher_model=teacher, args=args, train_dataset=data,
            data_collator=collator_for(tokenizers), processing_class=student_tok,
        )  # fmt: skip
        trainer.train()
        assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        runs[name] = (losses, torch.cat([p.detach().flatten() for p in student.parameters()]))
    assert runs["one"][0] == pytest.approx(runs["accumulated"][0], rel=1e-5)
    torch.testing.assert_close(runs["one"][1], runs["accumulated"][1], rtol=1e-5, atol=1e-6)
    _, fresh = models()
    assert not torch.allclose(runs["one"][1], torch.cat([p.flatten() for p in fresh.parameters()]))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(hidden_weight=1.0),
        dict(attention_weight=0.5),
        dict(hidden_weight_schedule="linear", hidden_weight_end=1.0),
    ],
)
def test_feature_losses_across_tokenizers_fail_at_construction(tmp_path, tokenizers, overrides):
    teacher, student = models()
    data = Dataset.from_dict({"text": TEXTS, "labels": [0] * len(TEXTS)})
    args = quick_distillation_args(tmp_path, **overrides)
    with pytest.raises(
        ValueError, match=r"only logit losses can be compared.*Set (hidden|attention)_weight=0"
    ):
        DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                            data_collator=collator_for(tokenizers))  # fmt: skip


@pytest.mark.parametrize("kind", ["token_dropout", "mask", "mix"])
def test_augmentation_across_tokenizers_is_refused(tmp_path, tokenizers, kind):
    """The teacher reads its own tokenization of the original text: augmenting the student's ids alone would show
    the two models different inputs, so it is refused rather than silently inconsistent."""
    teacher, student = models()
    data = Dataset.from_dict({"text": TEXTS, "labels": [0] * len(TEXTS)})
    args = quick_distillation_args(tmp_path, augmentation=kind)
    with pytest.raises(
        ValueError, match=f"augmentation='{kind}' cannot be used with a teacher that reads another"
    ):
        DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                            data_collator=collator_for(tokenizers), processing_class=tokenizers[0])  # fmt: skip


def test_token_classification_and_a_plain_collator_are_refused_with_the_fix(tmp_path, tokenizers):
    teacher, student = models()
    data = Dataset.from_dict({"text": TEXTS, "labels": [0] * len(TEXTS)})
    args = quick_distillation_args(tmp_path)
    token_student = BertForTokenClassification(student.config)
    with pytest.raises(ValueError, match="sequence-level tasks only"):
        DistillationTrainer(model=token_student, teacher_model=teacher, args=args, train_dataset=data,
                            data_collator=collator_for(tokenizers))  # fmt: skip
    # Without the collator the vocabulary check still protects the shared-ids path, and names the way out.
    with pytest.raises(ValueError, match="vocabulary.*differ.*TeacherInputsCollator"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)


def test_cross_tokenizer_cache_keys_both_tokenizers_and_trains_like_the_live_teacher(tmp_path, tokenizers):
    student_tok, teacher_tok = tokenizers
    data = Dataset.from_dict({"text": TEXTS, "labels": labels_for("single", len(TEXTS), 3)})
    cache = tmp_path / "cache"
    histories = {}
    for name, cached in (("live", False), ("cache-build", True), ("cache-read", True)):
        teacher, student = models()
        args = quick_distillation_args(tmp_path / name, teacher_cache=str(cache) if cached else None)
        trainer = DistillationTrainer(
            model=student, teacher_model=None if name == "cache-read" else teacher, args=args,
            train_dataset=data, data_collator=collator_for(tokenizers), processing_class=student_tok,
        )  # fmt: skip
        trainer.train()
        histories[name] = [e["loss_soft"] for e in trainer.state.log_history if "loss_soft" in e]
    assert histories["live"] == pytest.approx(histories["cache-build"], rel=1e-5)
    assert histories["cache-read"] == pytest.approx(histories["cache-build"], rel=1e-5)
    key = json.loads((cache / METADATA_FILE).read_text())["key"]
    assert key["tokenizer"] == tokenizer_fingerprint(teacher_tok)
    assert key["student_tokenizer"] == tokenizer_fingerprint(student_tok)
    assert key["max_length"] == 9

    other = student_tokenizer(tmp_path / "other")
    other.add_tokens(["zz"])
    _, student = models()
    args = quick_distillation_args(tmp_path / "stale", teacher_cache=str(cache))
    with pytest.raises(StaleTeacherCacheError, match="the student's tokenizer changed"):
        DistillationTrainer(model=student, teacher_model=None, args=args, train_dataset=data,
                            data_collator=TeacherInputsCollator(other, teacher_tok, teacher_max_length=9),
                            processing_class=other)  # fmt: skip


def save_student(folder, num_labels=3):
    _, student = models(num_labels=num_labels)
    student.save_pretrained(folder)
    student_tokenizer(folder).save_pretrained(folder)
    return folder


def cli_argv(tmp_path, teacher, student, out="run"):
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    return ["distill", "--teacher", str(teacher), "--student", str(student), "--dataset", str(data),
            "--output_dir", str(tmp_path / out), "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true",
            "--teacher_max_length", "10"]  # fmt: skip


def test_distill_cli_detects_another_tokenizer_and_says_which_path_it_takes(tmp_path, caplog, capsys):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    student = save_student(tmp_path / "student")
    with caplog.at_level(logging.INFO, logger="distilnlp"):
        assert main(cli_argv(tmp_path, teacher, student)) == 0
    assert "Cross-tokenizer distillation" in caplog.text and "logit losses only" in caplog.text
    results = json.loads((tmp_path / "run" / "distill_results.json").read_text())
    assert results["cross_tokenizer"] is True
    assert results["student_test_accuracy"] >= 0 and results["teacher_test_accuracy"] >= 0
    saved = BertTokenizerFast.from_pretrained(tmp_path / "run")  # the student keeps its own tokenizer
    assert tokenizer_fingerprint(saved) == tokenizer_fingerprint(BertTokenizerFast.from_pretrained(student))
    capsys.readouterr()
    assert main([*cli_argv(tmp_path, teacher, student, "run2"), "--hidden_weight", "1.0"]) == 1
    assert "only logit losses can be compared" in capsys.readouterr().err  # one line, no traceback

    same = save_tiny_model(tmp_path / "same-tokenizer-student", num_labels=3, layers=2, seed=3)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="distilnlp"):
        assert main(cli_argv(tmp_path, teacher, same, "run3")) == 0
    assert "share a tokenizer" in caplog.text
    assert json.loads((tmp_path / "run3" / "distill_results.json").read_text())["cross_tokenizer"] is False


@pytest.mark.slow
def test_cross_tokenizer_distill_runs_under_accelerate_launch_on_two_processes(tmp_path):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    student = save_student(tmp_path / "student")
    argv = cli_argv(tmp_path, teacher, student)
    argv[argv.index("--use_cpu") + 1] = "false"  # DistillationTrainingArguments picks gloo on CPU itself
    argv[argv.index("--per_device_train_batch_size") + 1] = "4"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(accelerate_launch("-m", "distilnlp", *argv), env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "distill_results.json").read_text())
    assert results["cross_tokenizer"] is True
    assert results["training"]["train_batch_size"] == 8  # 4 per process x 2 processes
