"""Soft labels brought from outside: a file of probabilities / logits trains like the live teacher's cache."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset
from tiny import quick_distillation_args, save_tiny_model, tiny_pair, tiny_tokenizer, write_topic_csv
from torch.utils.data import SequentialSampler
from transformers import DataCollatorWithPadding

from distilnlp import DistillationTrainer
from distilnlp.commands.cli import main
from distilnlp.data import SoftLabelError, read_soft_labels
from distilnlp.distill.losses import logit_kl_loss
from distilnlp.teacher_cache import LOGITS, build_soft_label_cache, build_teacher_cache

NAMES = ["alpha", "beta", "gamma"]
TEXTS = [" ".join(f"w{(5 * i + 2 * j) % 100}" for j in range(3 + i % 9)) for i in range(24)]


def tokenized(tokenizer, texts=TEXTS, labels=None):
    data = Dataset.from_dict({"text": texts, "labels": labels or [i % 3 for i in range(len(texts))]})
    return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=12), batched=True)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class InOrder(DistillationTrainer):
    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def train_from_cache(tmp_path, name, cache, data, tokenizer):
    """A fresh student (same init) trained 4 steps from `cache` with no teacher model; (losses, weights)."""
    _, student = tiny_pair()
    args = quick_distillation_args(tmp_path / name, teacher_cache=str(cache), alpha=0.6)
    trainer = InOrder(
        model=student, teacher_model=None, args=args, train_dataset=data.remove_columns("text"),
        processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
    )  # fmt: skip
    trainer.train()
    losses = [(e["loss"], e["loss_soft"]) for e in trainer.state.log_history if "loss" in e]
    return losses, torch.cat([p.detach().flatten() for p in student.parameters()])


@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_a_soft_label_file_trains_like_the_cache_of_the_live_teacher(tmp_path, kind):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    data = tokenized(tokenizer)
    teacher, _ = tiny_pair(initializer_range=0.3)
    live = build_teacher_cache(
        tmp_path / "live", teacher, {"train": data.remove_columns("text")}, tokenizer=tokenizer
    )
    logits = np.asarray(live.logits("train")[LOGITS])
    # What an outside tool would write: one row per text, a value per class name (shuffled key order).
    rows = []
    for text, row in zip(TEXTS, logits, strict=True):
        values = torch.softmax(torch.from_numpy(row).double(), -1).numpy() if kind == "probabilities" else row
        rows.append({"text": text, kind: {NAMES[c]: float(values[c]) for c in (2, 0, 1)}})
    soft = read_soft_labels(write_jsonl(tmp_path / "soft.jsonl", rows), NAMES)
    cache = build_soft_label_cache(tmp_path / "soft", soft, {"train": data.remove_columns("text")},
                                   {"train": TEXTS}, tokenizer=tokenizer)  # fmt: skip
    assert cache.metadata["splits"]["train"]["covered"] == len(TEXTS)

    reference = train_from_cache(tmp_path, "from-live", live.path, data, tokenizer)
    from_file = train_from_cache(tmp_path, "from-file", cache.path, data, tokenizer)
    if kind == "logits":  # the same numbers: the same training, bit for bit
        assert from_file[0] == reference[0]
        assert torch.equal(from_file[1], reference[1])
    else:  # log-probabilities = logits shifted per row: softmax, and so the loss, are unchanged
        np.testing.assert_allclose(np.array(from_file[0]), np.array(reference[0]), rtol=1e-5)
        torch.testing.assert_close(from_file[1], reference[1], rtol=1e-5, atol=1e-6)
    _, fresh = tiny_pair()
    assert not torch.allclose(reference[1], torch.cat([p.flatten() for p in fresh.parameters()]))


def test_rows_without_soft_labels_get_the_hard_loss_and_rows_without_labels_the_soft_loss(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    labels = [-100 if i % 4 == 0 else i % 3 for i in range(len(TEXTS))]
    data = tokenized(tokenizer, labels=labels)
    rng = np.random.default_rng(0)
    covered = [i for i in range(len(TEXTS)) if i % 3 != 1]  # rows 1, 4, 7, ... have no soft label
    given = {i: rng.normal(size=3) for i in covered}
    rows = [{"text": TEXTS[i], "logits": given[i].tolist()} for i in covered]
    soft = read_soft_labels(write_jsonl(tmp_path / "soft.jsonl", rows), NAMES, temperature=0.5)
    cache = build_soft_label_cache(tmp_path / "soft", soft, {"train": data.remove_columns("text")},
                                   {"train": TEXTS}, tokenizer=tokenizer)  # fmt: skip
    _, student = tiny_pair()
    args = quick_distillation_args(tmp_path, teacher_cache=str(cache.path), alpha=0.6, temperature=2.0)
    trainer = DistillationTrainer(model=student, teacher_model=None, args=args,
                                  train_dataset=data.remove_columns("text"), processing_class=tokenizer,
                                  data_collator=DataCollatorWithPadding(tokenizer))  # fmt: skip
    rows = [trainer.train_dataset[i] for i in range(len(TEXTS))]
    batch = DataCollatorWithPadding(tokenizer)(rows)
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        student_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # By hand: soft = mean over covered rows (file logits / 0.5), hard = CE mean over labelled rows.
    teacher = torch.tensor(np.stack([given[i] for i in covered]), dtype=torch.float32) / 0.5
    soft_ref = logit_kl_loss(student_logits[covered], teacher, 2.0)
    labelled = [i for i in range(len(TEXTS)) if labels[i] != -100]
    hard_ref = torch.nn.functional.cross_entropy(student_logits[labelled], torch.tensor(labels)[labelled])
    torch.testing.assert_close(loss.float(), 0.6 * soft_ref + 0.4 * hard_ref, rtol=1e-5, atol=1e-6)


def test_formats_csv_wide_columns_parquet_lists_label_names_and_a_label_map(tmp_path):
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    expected = np.log(probabilities).astype(np.float32)
    csv = tmp_path / "soft.csv"
    pd.DataFrame(
        {"text": TEXTS[:2], **{f"probabilities.{n}": probabilities[:, c] for c, n in enumerate(NAMES)}}
    ).to_csv(csv, index=False)
    parquet = tmp_path / "soft.parquet"
    pd.DataFrame({"id": [10, 11], "probabilities": [p[::-1].tolist() for p in probabilities],
                  "label_names": [["gamma", "beta", "alpha"]] * 2}).to_parquet(parquet)  # fmt: skip
    renamed = write_jsonl(tmp_path / "renamed.jsonl", [
        {"text": TEXTS[i], "probabilities": {"A": p[0], "B": p[1], "C": p[2]}} for i, p in enumerate(probabilities)
    ])  # fmt: skip
    for path, options in (
        (csv, {}),
        (parquet, {}),
        (renamed, {"label_map": {"A": "alpha", "B": "beta", "C": "gamma"}}),
    ):
        soft = read_soft_labels(path, NAMES, **options)
        np.testing.assert_allclose(soft.logits, expected, rtol=1e-6)
    assert read_soft_labels(parquet, NAMES).keys == ["10", "11"]
    # Content, not bytes, is fingerprinted: the same values in CSV and JSONL give one fingerprint.
    same = write_jsonl(
        tmp_path / "same.jsonl",
        [{"text": TEXTS[i], "probabilities": p.tolist()} for i, p in enumerate(probabilities)],
    )
    assert read_soft_labels(same, NAMES).fingerprint == read_soft_labels(csv, NAMES).fingerprint
    assert (
        read_soft_labels(same, NAMES, temperature=2.0).fingerprint != read_soft_labels(csv, NAMES).fingerprint
    )


GOOD = {"alpha": 0.5, "beta": 0.25, "gamma": 0.25}


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (
            {"probabilities": [0.5, 0.5]},
            r"row 3 has 2 probabilities but the task has 3 classes \(alpha, beta, gamma\)",
        ),
        (
            {"probabilities": {"alpha": 0.5, "beta": 0.25, "sports": 0.25}},
            r"row 3 names class 'sports', which is not a task label",
        ),
        (
            {"logits": {"alpha": 1.0, "beta": float("nan"), "gamma": 0.0}},
            r"row 3: the logits value of class 'beta' is nan",
        ),
        (
            {"probabilities": {"alpha": 0.5, "beta": float("nan"), "gamma": 0.25}},
            r"row 3: the probabilities value of class 'beta' is nan",
        ),
        (
            {"probabilities": {"alpha": 0.5, "beta": 0.3, "gamma": 0.1}},
            r"row 3: probabilities sum to 0.9, not 1 \(tolerance 0.001\)",
        ),
        (
            {"text": "not in the data", "probabilities": GOOD},
            r"row 3 matches no text of the task data \(text 'not in the data'; 1 of 3 rows match none\)",
        ),
        (
            {"text": TEXTS[0], "probabilities": {"alpha": 0.2, "beta": 0.4, "gamma": 0.4}},
            r"row 3 repeats the text of row 1 with other probabilities",
        ),
    ],
)
def test_malformed_soft_label_files_fail_with_one_line_naming_the_row(tmp_path, bad_row, message):
    rows = [{"text": TEXTS[0], "probabilities": GOOD}, {"text": TEXTS[1], "probabilities": GOOD}]
    bad = {"text": TEXTS[2], "probabilities": GOOD} | bad_row
    if "logits" in bad_row:
        rows = [{"text": r["text"], "logits": [0.0, 1.0, 2.0]} for r in rows]
        bad.pop("probabilities")
    path = write_jsonl(tmp_path / "soft.jsonl", [*rows, bad])
    with pytest.raises(SoftLabelError) as error:
        soft = read_soft_labels(path, NAMES)
        soft.check_all_matched(TEXTS)
    text = str(error.value)
    assert "\n" not in text and text.startswith(str(path))
    assert re.search(message, text), text


def test_a_file_without_key_or_values_and_a_csv_nan_are_named(tmp_path):
    path = write_jsonl(tmp_path / "nokey.jsonl", [{"sentence": "w1", "probabilities": GOOD}])
    with pytest.raises(SoftLabelError, match="no 'text' or 'id' column"):
        read_soft_labels(path, NAMES)
    path = write_jsonl(tmp_path / "both.jsonl", [{"text": "w1", "probabilities": GOOD, "logits": [1, 2, 3]}])
    with pytest.raises(SoftLabelError, match="exactly one of 'probabilities' or 'logits'"):
        read_soft_labels(path, NAMES)
    csv = tmp_path / "nan.csv"
    csv.write_text("text,logits.alpha,logits.beta,logits.gamma\nw1,1,2,3\nw2,1,,3\n")
    with pytest.raises(SoftLabelError, match=r"row 2: the logits value of class 'beta' is nan"):
        read_soft_labels(csv, NAMES)


def test_distill_cli_trains_a_pretrained_student_from_a_soft_label_file_alone(tmp_path, capsys):
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    student = save_tiny_model(tmp_path / "student", num_labels=3, layers=2)
    texts = pd.read_csv(data)["text"].tolist()
    labels = pd.read_csv(data)["label"].tolist()
    # An "outside labeller" that is confident in the keyword's class, for 2 of every 3 texts.
    rows = [{"text": t, "probabilities": {n: (0.9 if n == lab else 0.05) for n in NAMES}}
            for i, (t, lab) in enumerate(zip(texts, labels, strict=True)) if i % 3]  # fmt: skip
    soft = write_jsonl(tmp_path / "soft.jsonl", rows)
    out = tmp_path / "run"
    argv = ["distill", "--soft_labels", str(soft), "--student", str(student), "--dataset", str(data),
            "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "8",
            "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "distill_results.json").read_text())
    assert results["soft_labels"]["rows"] == 40 and results["soft_labels"]["kind"] == "probabilities"
    covered = results["soft_label_coverage"]
    assert 0 < covered["train"] < 48 and results["teacher_cache"]["backend"] == "soft_labels"
    assert "student_test_accuracy" in results and "teacher_test_accuracy" not in results
    assert "soft labels (soft.jsonl)" in (out / "README.md").read_text()
    capsys.readouterr()
    assert main([*argv, "--teacher", str(student)]) == 2  # a usage error, in one line
    assert "Give either teacher or soft_labels" in capsys.readouterr().err
