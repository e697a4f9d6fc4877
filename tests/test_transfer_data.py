"""Hard BBC News tasks (split by article) and unlabelled transfer data (--transfer_dataset)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import quick_distillation_args, save_tiny_model, write_topic_csv
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from distilnlp import DistillationTrainer
from distilnlp.commands.steps import prepare_data
from distilnlp.data import (
    BBC_TASKS,
    UNLABELED,
    DataArguments,
    load_bbc_task,
    load_task_data,
    load_transfer_texts,
    window_texts,
)
from distilnlp.data.bbc_tasks import article_splits, split_sentences, split_windows

# ----------------------------------------------------------------------------------------- BBC tasks


@pytest.mark.slow
@pytest.mark.parametrize("task", BBC_TASKS)
def test_bbc_tasks_split_by_article_and_are_deterministic(task):
    splits = load_bbc_task(task, seed=3)
    articles = {name: set(split["article"]) for name, split in splits.items()}
    assert not articles["train"] & articles["test"]
    assert not articles["train"] & articles["validation"]
    assert not articles["validation"] & articles["test"]
    from distilnlp.data import load_bbc_news
    from distilnlp.data.bbc_tasks import load_bbc_transfer

    corpus = load_bbc_news()
    transfer = article_splits(len(corpus), corpus["label"], 3)["transfer"]
    assert len(set.union(*articles.values())) + len(transfer) == 2225  # every article is used once
    assert not set(transfer.tolist()) & set.union(*articles.values())
    unlabelled = load_bbc_transfer(task, seed=3)
    assert unlabelled.column_names == ["text"] and len(unlabelled) > len(splits["test"])
    assert load_transfer_texts(task, seed=3, max_samples=5)["text"] == unlabelled["text"][:5]
    assert len(splits["test"]) >= 1500
    again = load_bbc_task(task, seed=3)
    assert again["test"]["text"] == splits["test"]["text"]
    other = load_bbc_task(task, seed=4)
    assert set(other["test"]["article"]) != articles["test"]
    # Loadable by name through the ordinary data path, splits kept as they are.
    data = load_task_data(DataArguments(dataset=task, split_seed=3, max_eval_samples=10))
    assert data["train"]["text"] == splits["train"]["text"]
    assert data["train"].features["label"].names == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]
    # Every unit's label is its article's label.
    rows = splits["test"].select(range(50))
    assert rows["label"] == [corpus[a]["label"] for a in rows["article"]]
    # Windows are runs of the article's words; sentences are pieces of it.
    assert all(" ".join(t.split()) in " ".join(corpus[a]["text"].split()) for t, a in zip(rows["text"], rows["article"], strict=True))  # fmt: skip


def test_article_splits_are_disjoint_stratified_and_seeded():
    labels = [i % 5 for i in range(200)]
    parts = article_splits(200, labels, seed=1)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(200))
    assert [len(parts[n]) for n in ("train", "validation", "test", "transfer")] == [80, 10, 30, 80]
    assert np.bincount(np.asarray(labels)[parts["test"]]).tolist() == [6] * 5  # stratified by topic
    assert parts["test"].tolist() == article_splits(200, labels, seed=1)["test"].tolist()
    assert parts["test"].tolist() != article_splits(200, labels, seed=2)["test"].tolist()


def test_sentence_and_window_cutting():
    text = 'Title here\n\nFirst one is here. "Second one," he said. Third? Yes! 4 ends.\nNew para.'
    assert split_sentences(text) == [
        "Title here",
        "First one is here.",
        '"Second one," he said.',
        "Third?",
        "Yes!",
        "4 ends.",
        "New para.",
    ]
    assert split_windows("a b c d e f g", 3) == ["a b c", "d e f"]  # the short tail is dropped


# -------------------------------------------------------------------------------------- transfer set


def test_window_texts_cuts_every_document_into_consecutive_windows():
    assert window_texts(["a b c d e f g", "", "h i", None], 3) == ["a b c", "d e f", "g", "h i"]
    words = [f"w{i}" for i in range(100)]
    windows = window_texts([" ".join(words)], 8)
    assert len(windows) == 13 and " ".join(windows).split() == words


def write_formats(folder, texts):
    folder.mkdir()
    (folder / "t.txt").write_text("\n".join(texts) + "\n")
    pd.DataFrame({"body": texts, "other": range(len(texts))}).to_csv(folder / "t.csv", index=False)
    (folder / "t.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    pd.DataFrame({"body": texts}).to_parquet(folder / "t.parquet")
    shards = folder / "shards"
    shards.mkdir()
    for i in range(2):
        pd.DataFrame({"body": texts[i::2]}).to_parquet(shards / f"part-{i}.parquet")
    return folder


def test_transfer_texts_from_every_format_with_windows(tmp_path):
    texts = ["one two three four five", "six seven", "eight nine ten eleven"]
    folder = write_formats(tmp_path / "f", texts)
    expected = ["one two", "three four", "five", "six seven", "eight nine", "ten eleven"]
    for name in ("t.txt", "t.csv", "t.jsonl", "t.parquet"):
        loaded = load_transfer_texts(str(folder / name), "body", window=2)
        assert loaded.column_names == ["text"] and loaded["text"] == expected, name
    assert load_transfer_texts(str(folder / "t.csv"), "body")["text"] == texts
    shards = load_transfer_texts(str(folder / "shards"), "body", window=2, max_samples=3)
    assert sorted(shards["text"]) == sorted(["one two", "three four", "five"])  # first shard's windows
    assert len(load_transfer_texts(str(folder / "shards"), "body")) == 3


def test_transfer_errors_name_the_problem(tmp_path):
    folder = write_formats(tmp_path / "f", ["a b", "c d"])
    with pytest.raises(ValueError, match="no column 'text'.*transfer_text_column"):
        load_transfer_texts(str(folder / "t.csv"))
    with pytest.raises(ValueError, match="must hold text"):
        load_transfer_texts(str(folder / "t.csv"), "other")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_transfer_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="Unsupported transfer file"):
        load_transfer_texts(str(tmp_path / "x.xml"))
    with pytest.raises(ValueError, match="mixes file formats"):
        load_transfer_texts(str(folder))
    with pytest.raises(ValueError, match="transfer_window must be >= 1"):
        DataArguments(transfer_window=0)


@pytest.fixture
def transfer_setup(tmp_path):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    data = write_topic_csv(tmp_path / "topics.csv", n=30)
    (tmp_path / "transfer.txt").write_text(
        "\n".join(" ".join(f"w{(7 * i + j) % 100 + 10}" for j in range(12)) for i in range(5)) + "\n"
    )
    return teacher, data, tmp_path / "transfer.txt"


def test_transfer_rows_join_training_unlabelled_and_never_add_hard_loss(tmp_path, transfer_setup):
    teacher_dir, data, transfer = transfer_setup
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    args = DataArguments(dataset=str(data), transfer_dataset=str(transfer), transfer_window=5, max_length=16)
    _, tokenized, _ = prepare_data(args, tokenizer, with_transfer=True)
    _, plain, _ = prepare_data(args, tokenizer)  # finetune's view: no transfer rows
    train = tokenized["train"]
    n = len(plain["train"])
    assert len(train) == n + 15  # 5 texts x 12 words in windows of 5: 3 windows each
    assert train["labels"][n:] == [UNLABELED] * 15 and UNLABELED not in train["labels"][:n]
    assert train.select(range(n))["input_ids"] == plain["train"]["input_ids"]

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    torch.manual_seed(1)
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    collate = DataCollatorWithPadding(tokenizer)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=quick_distillation_args(tmp_path, alpha=0.0, temperature=1.0),
        train_dataset=train,
        data_collator=collate,
    )
    student.eval()
    # A batch of transfer rows only: no hard loss at all (alpha 0 leaves nothing to learn from).
    batch = collate([train[i] for i in range(n, n + 6)])
    with torch.no_grad():
        assert trainer.compute_loss(student, batch).item() == 0.0
        # A mixed batch: the hard loss is the cross-entropy of the labelled rows alone.
        rows = [train[i] for i in (0, 1, 2, n, n + 1)]
        loss = trainer.compute_loss(student, collate(rows))
        labelled = collate(rows[:3])
        logits = student(input_ids=labelled["input_ids"], attention_mask=labelled["attention_mask"]).logits
        reference = torch.nn.functional.cross_entropy(logits, labelled["labels"])
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("task", ["sentences", "windows"])
def test_recommended_recipes_parse(task, tmp_path):
    from pathlib import Path

    from distilnlp import DistillationTrainingArguments
    from distilnlp.commands.arguments import DistillArguments, FinetuneArguments
    from distilnlp.commands.config import parse_config
    from distilnlp.distill.stage_arguments import StageTrainingArguments

    recipes = Path(__file__).parent.parent / "recipes"
    out = ["--output_dir", str(tmp_path)]
    _, teacher_data, _ = parse_config(
        (FinetuneArguments, DataArguments, StageTrainingArguments),
        [str(recipes / f"finetune_bbc_news_{task}.yaml"), *out],
    )
    distill_args, data, args = parse_config(
        (DistillArguments, DataArguments, DistillationTrainingArguments),
        [str(recipes / f"distill_bbc_news_{task}_transfer.yaml"), *out],
    )
    assert teacher_data.dataset == data.dataset == data.transfer_dataset == f"bbc_news_{task}"
    assert data.max_transfer_samples == 8 * data.max_train_samples == 8 * teacher_data.max_train_samples
    assert distill_args.teacher == [f"runs/teacher-{task}"] and args.teacher_cache and args.alpha == 0.9
