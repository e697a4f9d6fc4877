"""Consistent augmentation: seeded, special tokens and padding untouched, the teacher sees the student's input."""

import pytest
import torch
from tiny import (
    assert_accumulation_matches_one_batch,
    pad_collate,
    quick_distillation_args,
    tiny_pair,
    tiny_tokenizer,
    token_dataset,
)

from distilnlp import DistillationTrainer
from distilnlp.distill.augment import Augmenter, augment_batch, augment_window, row_seed

SPECIAL = frozenset({0, 1, 2, 3, 4})  # tiny_tokenizer: [PAD] [UNK] [CLS] [SEP] [MASK]; token_dataset: 1 ... 2


def batch_of(n=8, seed=0, **kwargs):
    rows = token_dataset(n, seed=seed, min_len=3, max_len=20, **kwargs)
    return pad_collate([rows[i] for i in range(n)])


def rows_of(batch):
    """Each row's real tokens (and token labels, if any) as lists: padding-free, for comparisons."""
    out = []
    for b, mask in enumerate(batch["attention_mask"].tolist()):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)  # right-padded
        assert batch["input_ids"][b, n:].eq(0).all()  # padding is the pad id
        labels = batch["labels"][b, :n].tolist() if batch["labels"].dim() == 2 else batch["labels"][b].item()
        out.append((batch["input_ids"][b, :n].tolist(), labels))
    return out


def is_subsequence(short, long):
    it = iter(long)
    return all(token in it for token in short)


@pytest.mark.parametrize("kind", ["token_dropout", "mask", "span_delete", "mix"])
def test_special_tokens_and_padding_are_untouched(kind):
    batch = batch_of()
    augmenter = Augmenter(kind, 1.0 if kind == "mix" else 0.5, 0, SPECIAL, 4)
    out = augment_batch(batch, augmenter, list(range(8)))
    changed = 0
    contents = [ids[1:-1] for ids, _ in rows_of(batch)]
    for b, ((ids, label), (original, original_label)) in enumerate(
        zip(rows_of(out), rows_of(batch), strict=True)
    ):
        assert ids[0] == 1 and ids[-1] == 2 and 1 not in ids[1:-1] and 2 not in ids[1:-1]
        content, original_content = ids[1:-1], original[1:-1]
        changed += ids != original
        if kind == "token_dropout":
            assert is_subsequence(content, original_content) and label == original_label
        elif kind == "mask":
            assert len(ids) == len(original) and label == original_label
            assert all(t == o or t == 4 for t, o in zip(content, original_content, strict=True))
        elif kind == "span_delete":
            k = round(0.5 * len(original_content))
            assert len(content) == len(original_content) - k
            assert any(
                content == original_content[:i] + original_content[i + k :] for i in range(len(content) + 1)
            )
        else:
            assert label == -100  # every row mixed (p = 1): start of its own, end of another's
            assert any(
                content == original_content[:cut] + contents[o][j:]
                for cut in range(len(original_content) + 1)
                for o in range(8)
                if o != b
                for j in range(len(contents[o]) + 1)
            )
    assert changed >= 3


def test_token_labels_move_with_their_tokens():
    batch = batch_of(token=True)
    batch["labels"] = torch.where(batch["attention_mask"].bool(), batch["input_ids"], -100)
    out = augment_batch(batch, Augmenter("token_dropout", 0.4, 0, SPECIAL), list(range(8)))
    real = out["attention_mask"].bool()
    assert torch.equal(out["labels"][real], out["input_ids"][real])
    assert out["labels"][~real].eq(-100).all()


def test_augmentation_is_seeded_by_seed_step_and_row_not_by_batching_or_padding():
    batch = batch_of(8, seed=2)
    augmenter = Augmenter("token_dropout", 0.3, 0, SPECIAL)
    whole = rows_of(augment_window([batch], augmenter, seed=7, step=3, process=0)[0])
    again = rows_of(augment_window([batch], augmenter, seed=7, step=3, process=0)[0])
    halves = augment_window(
        [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}], augmenter, 7, 3, 0
    )
    assert whole == again == rows_of(halves[0]) + rows_of(halves[1])
    assert whole != rows_of(augment_window([batch], augmenter, seed=7, step=4, process=0)[0])
    assert whole != rows_of(augment_window([batch], augmenter, seed=8, step=3, process=0)[0])
    assert whole != rows_of(augment_window([batch], augmenter, seed=7, step=3, process=1)[0])
    # Process 1 of 2 augments rows as rows 8..15 of a 1-process window of 16 would be.
    double = {k: torch.cat([v, v]) for k, v in batch.items()}
    assert (
        rows_of(augment_window([batch], augmenter, 7, 3, process=1)[0])
        == rows_of(augment_window([double], augmenter, 7, 3, process=0)[0])[8:]
    )
    assert len({row_seed(0, s, r) for s in range(3) for r in range(16)}) == 48


def test_p_1_token_dropout_keeps_only_special_tokens_and_no_tokenizer_means_first_and_last():
    batch = batch_of()
    out = augment_batch(batch, Augmenter("token_dropout", 1.0), list(range(8)))
    assert all(ids == [1, 2] for ids, _ in rows_of(out))
    assert out["input_ids"].shape == (8, 2)


# --------------------------------------------------------------------------------------------- trainer


def make_trainer(tmp_path, teacher, student, dataset, processing_class=None, **overrides):
    values = dict(
        alpha=0.5, augmentation="token_dropout", augmentation_prob=0.3, per_device_train_batch_size=4
    )
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=quick_distillation_args(tmp_path, **(values | overrides)),
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=pad_collate,
        processing_class=processing_class,
    )


def record_inputs(model):
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(
            (kwargs["input_ids"].clone(), kwargs["attention_mask"].clone())
        ),
        with_kwargs=True,
    )
    return seen


def test_the_teacher_sees_exactly_the_students_augmented_input(tmp_path):
    teacher, student = tiny_pair()
    dataset = token_dataset(16, seed=1)
    trainer = make_trainer(tmp_path, teacher, student, dataset, max_steps=2, gradient_accumulation_steps=2)
    student_seen, teacher_seen = record_inputs(student), record_inputs(teacher)
    trainer.train()
    assert len(student_seen) == len(teacher_seen) == 4
    for (s_ids, s_mask), (t_ids, t_mask) in zip(student_seen, teacher_seen, strict=True):
        assert torch.equal(s_ids, t_ids) and torch.equal(s_mask, t_mask)
    original_tokens = sum(len(row["input_ids"]) for row in dataset)
    seen_tokens = sum(int(mask.sum()) for _, mask in student_seen)
    assert seen_tokens < original_tokens  # tokens were dropped (all 16 rows seen once)
    # Evaluation is not augmented.
    student_seen.clear()
    trainer.evaluate()
    assert sum(int(mask.sum()) for _, mask in student_seen) == original_tokens


def test_gradient_accumulation_with_augmentation_matches_one_large_batch(tmp_path):
    assert_accumulation_matches_one_batch(
        make_trainer, tmp_path, hidden_weight=1.0, attention_weight=1.0, augmentation="span_delete"
    )


def test_mask_augmentation_uses_the_tokenizers_mask_token(tmp_path):
    teacher, student = tiny_pair()
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    trainer = make_trainer(
        tmp_path,
        teacher,
        student,
        token_dataset(8),
        augmentation="mask",
        augmentation_prob=0.5,
        max_steps=1,
        per_device_train_batch_size=8,
        processing_class=tokenizer,
    )
    seen = record_inputs(teacher)
    trainer.train()
    ids = seen[0][0]
    assert (ids == tokenizer.mask_token_id).sum() > 0
    assert ids[:, 0].eq(1).all()  # token_dataset's first token (id 1 = [UNK] here) is special: untouched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(augmentation="cutout"),
            "augmentation must be one of none, token_dropout, mask, span_delete, mix",
        ),
        (dict(augmentation="mask", augmentation_prob=0.0), r"augmentation_prob must be in \(0, 1\]"),
        (dict(augmentation="mask", teacher_cache="cache"), "cached teacher logits .* cannot teach it"),
        (dict(augmentation="mix", alpha=0.0), "augmentation='mix' rows have no hard label"),
    ],
)
def test_bad_augmentation_arguments_are_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        quick_distillation_args(tmp_path, **overrides)


def test_mask_augmentation_without_a_tokenizer_fails_at_construction(tmp_path):
    teacher, student = tiny_pair()
    with pytest.raises(ValueError, match="augmentation='mask' needs a mask token"):
        make_trainer(tmp_path, teacher, student, token_dataset(4), augmentation="mask")
